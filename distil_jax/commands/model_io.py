"""Shared command-line options for loading a model: mesh shape and dtype."""

from __future__ import annotations


def add_model_arguments(parser):
  parser.add_argument(
      "--dtype",
      default=None,
      choices=["float32", "bfloat16", "float16"],
      help="parameter dtype (default: the checkpoint's)",
  )
  parser.add_argument(
      "--mesh",
      default="data=1",
      help="mesh shape, e.g. 'fsdp=8' or 'data=2,tensor=4' (-1 fills the rest)",
  )


def parse_mesh(text: str):
  from distil_jax.sharding import MeshConfig  # noqa: PLC0415

  fields = {}
  for part in filter(None, text.split(",")):
    name, _, value = part.partition("=")
    if name not in ("data", "fsdp", "tensor") or not value.lstrip("-").isdigit():
      raise SystemExit(f"--mesh: cannot parse {part!r}; expected e.g. 'fsdp=8,tensor=1'")
    fields[name] = int(value)
  fields.setdefault("data", 1 if fields else -1)
  return MeshConfig(**fields)


def mesh_from_arg(text: str):
  """`--mesh` -> a Mesh over the first devices it names (every device when an axis is -1)."""
  import jax  # noqa: PLC0415
  from distil_jax.sharding import make_mesh  # noqa: PLC0415

  mesh_cfg = parse_mesh(text)
  sizes = (mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor)
  devices = jax.devices()
  return make_mesh(
      mesh_cfg, devices=devices if -1 in sizes else devices[: abs(sizes[0] * sizes[1] * sizes[2])]
  )


def load(path: str, args):
  """A model from an orbax checkpoint, a training workdir, or a HF directory."""
  from distil_jax.loading import open_model  # noqa: PLC0415
  from distil_jax.model.config import parse_dtype  # noqa: PLC0415

  mesh = mesh_from_arg(args.mesh)
  overrides = {"param_dtype": parse_dtype(args.dtype)} if args.dtype else {}
  return open_model(path, mesh=mesh, **overrides)
