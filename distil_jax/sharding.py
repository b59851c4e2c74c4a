"""Meshes and the one table that maps logical axis names to mesh axes.

Model code only names logical axes (on parameters through `axes` metadata, on
activations through `constrain`). Which mesh axis each name lands on is policy,
chosen by the config and applied here.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or tuple of mesh axes, or None = replicated).
Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

DEFAULT_RULES: Rules = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    # activations
    ("batch", ("data", "fsdp")),
    ("seq", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_seq", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device counts per mesh axis; -1 takes every device the others leave."""

  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  def shape(self, num_devices: int) -> tuple[int, int, int]:
    sizes = [self.data, self.fsdp, self.tensor]
    if sizes.count(-1) > 1:
      raise ValueError(f"{self}: at most one mesh axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
      if num_devices % known:
        raise ValueError(f"{self}: {num_devices} devices do not divide by {known}")
      sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
      raise ValueError(
          f"{self}: mesh {sizes} needs {math.prod(sizes)} devices, " f"have {num_devices}"
      )
    return tuple(sizes)


def make_mesh(
    mesh_cfg: MeshConfig = MeshConfig(), devices: Sequence[jax.Device] | None = None
) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_cfg.shape(len(devices))
  if len(devices) == len(jax.devices()):  # let JAX order devices by topology
    return jax.make_mesh(
        shape, MESH_AXES, devices=devices, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    )
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def _mesh_axis_size(mesh, axis) -> int:
  if axis is None:
    return 1
  names = (axis,) if isinstance(axis, str) else axis
  return math.prod(mesh.shape[n] for n in names)


def logical_to_spec(
    axes: Sequence[str | None],
    rules: Rules = DEFAULT_RULES,
    shape: Sequence[int] | None = None,
    mesh=None,
) -> PartitionSpec:
  """Logical names -> PartitionSpec. With `shape` and `mesh`, a dimension that the mesh
  axis does not divide stays replicated (e.g. 2 KV heads on 8 tensor shards), and a mesh
  axis is used at most once."""
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for i, name in enumerate(axes):
    target = table.get(name) if name is not None else None
    if name is not None and name not in table:
      raise KeyError(f"logical axis {name!r} has no sharding rule")
    names = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
    if names and (used & set(names)):
      target = None
    elif names and shape is not None and mesh is not None:
      if shape[i] % _mesh_axis_size(mesh, target):
        target = None
    if target is not None:
      used.update(names)
    spec.append(target)
  return PartitionSpec(*spec)


def _param_axes(variable: nnx.Variable) -> tuple[str | None, ...]:
  axes = variable.get_metadata().get("axes")
  if axes is None:
    raise ValueError(f"parameter of shape {variable.shape} carries no `axes` metadata")
  return tuple(axes)


def state_shardings(state, mesh: Mesh, rules: Rules = DEFAULT_RULES):
  """An nnx.State (abstract or concrete) -> the same tree with NamedSharding leaves."""

  def one(v):
    spec = logical_to_spec(_param_axes(v), rules, v.shape, mesh)
    return v.replace(NamedSharding(mesh, spec))

  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def param_sharding(axes, shape, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> NamedSharding:
  return NamedSharding(mesh, logical_to_spec(axes, rules, shape, mesh))


# --- activations ----------------------------------------------------------------
_RULES: contextvars.ContextVar[Rules | None] = contextvars.ContextVar("rules", default=None)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[Mesh]:
  """Make `mesh` current and `rules` the logical table while tracing model code."""
  token = _RULES.set(rules)
  try:
    with jax.set_mesh(mesh):
      yield mesh
  finally:
    _RULES.reset(token)


def current_spec(axes: Sequence[str | None], shape: Sequence[int]) -> PartitionSpec | None:
  """The PartitionSpec logical `axes` take under the current `use_mesh`, or None outside it."""
  rules = _RULES.get()
  mesh = jax.sharding.get_abstract_mesh()
  if rules is None or mesh is None or mesh.empty:
    return None
  return logical_to_spec(axes, rules, shape, mesh)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Pin an activation's layout by logical names; a no-op outside `use_mesh`."""
  spec = current_spec(axes, x.shape)
  return x if spec is None else jax.lax.with_sharding_constraint(x, spec)


def sync_processes(name: str) -> None:
  """A barrier across JAX processes (free with one process), e.g. after process 0 renames
  a finished output into place and before anyone reads it."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415

    multihost_utils.sync_global_devices(name)
