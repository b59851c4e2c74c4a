"""The one way to open a model: an HF directory, a distil-jax model checkpoint, or a run.

`open_model` recognises what `path` holds and restores it straight into the shardings of
`mesh` (one device when omitted), in the asked dtype. The student's init, the teacher of
distillation, the DPO reference, `generate`, `serve`, `export` and `eval` all come through here.
`model_config_at` reads only the architecture, for planning shapes before anything loads.
"""

from __future__ import annotations

import enum
import os

import jax

from distil_jax.model import ModelConfig, Qwen2
from distil_jax.sharding import DEFAULT_RULES, MeshConfig, Rules, make_mesh


class Kind(enum.Enum):
  HF = "hf"  # config.json + safetensors
  MODEL_CHECKPOINT = "model_checkpoint"  # `distil-jax convert`: model_config.json + params/
  TRAIN_RUN = "train_run"  # a `distil-jax train` workdir, or one of its checkpoints/<step>


def train_run_step_dir(path: str) -> str | None:
  """`path` as a step directory of a training run: the run's workdir (its latest step) or
  `<workdir>/checkpoints/<step>` itself; None when it is neither."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    steps = [int(d) for d in os.listdir(os.path.join(path, "checkpoints")) if d.isdigit()]
    if not steps:
      raise FileNotFoundError(f"{path}/checkpoints holds no finished step")
    return os.path.join(path, "checkpoints", str(max(steps)))
  if (
      os.path.isdir(os.path.join(path, "state"))
      and os.path.basename(os.path.dirname(path)) == "checkpoints"
  ):
    return path
  return None


def kind_of(path: str) -> Kind:
  from distil_jax import checkpoints

  if train_run_step_dir(path):
    return Kind.TRAIN_RUN
  if checkpoints.is_model_checkpoint(path):
    return Kind.MODEL_CHECKPOINT
  return Kind.HF  # or nothing: the HF reader names what is missing


def _dtype_overrides(dtype, overrides: dict) -> dict:
  if dtype is not None:
    from distil_jax.model.config import parse_dtype

    dtype = parse_dtype(dtype)
    overrides.setdefault("param_dtype", dtype)
    overrides.setdefault("compute_dtype", dtype)
  return overrides


def _run_workdir(step_dir: str) -> str:
  from distil_jax import checkpoints

  workdir = os.path.dirname(os.path.dirname(step_dir))
  if not os.path.isfile(os.path.join(workdir, checkpoints.CONFIG_FILE)):
    raise FileNotFoundError(
        f"{workdir}: no {checkpoints.CONFIG_FILE}; was it written by " "`distil-jax train`?"
    )
  return workdir


def model_config_at(path: str, *, dtype=None, **config_overrides) -> ModelConfig:
  """The architecture stored at `path` (any kind `open_model` opens), nothing loaded."""
  from distil_jax import checkpoints

  config_overrides = _dtype_overrides(dtype, config_overrides)
  kind = kind_of(path)
  if kind is Kind.TRAIN_RUN:
    return checkpoints.read_config(_run_workdir(train_run_step_dir(path)), **config_overrides)
  if kind is Kind.MODEL_CHECKPOINT:
    return checkpoints.read_config(path, **config_overrides)
  from distil_jax.hf.load import read_config

  return read_config(path, **config_overrides)


def open_model(
    path: str, *, mesh=None, rules: Rules = DEFAULT_RULES, dtype=None, **config_overrides
) -> Qwen2:
  """A HF Qwen2 directory, a distil-jax model checkpoint, or a training run (its workdir, for
  the latest step, or one `checkpoints/<step>` directory) -> a `Qwen2` sharded on `mesh`.

  `dtype` sets parameter and compute dtype together (default: the checkpoint's parameters,
  HF's `torch_dtype`); other `ModelConfig` fields (attention_impl, remat_policy,
  compute_dtype, ...) may be overridden by keyword.
  """
  from flax import nnx
  from distil_jax import checkpoints

  config_overrides = _dtype_overrides(dtype, config_overrides)
  if mesh is None:
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
  kind = kind_of(path)
  if kind is Kind.HF:
    from distil_jax.hf.load import load_hf_state

    return load_hf_state(path, model_config_at(path, **config_overrides), mesh, rules)
  if kind is Kind.MODEL_CHECKPOINT:
    return checkpoints.load_model(path, mesh, rules, **config_overrides)
  from distil_jax.model import abstract_model
  from distil_jax.sharding import state_shardings
  from distil_jax.train.checkpoint import restore_params

  step_dir = train_run_step_dir(path)
  cfg = model_config_at(path, **config_overrides)
  graphdef, abs_params = nnx.split(abstract_model(cfg))
  shardings = state_shardings(abs_params, mesh, rules)
  target = jax.tree.map(
      lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s), abs_params, shardings
  )
  return nnx.merge(graphdef, restore_params(step_dir, target))


from_pretrained = open_model  # the name users of transformers reach for
