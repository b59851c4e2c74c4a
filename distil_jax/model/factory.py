"""Build a Qwen2 whose parameters are born sharded: abstract shapes, then shardings,
then a jitted init that writes each shard straight to its device."""

from __future__ import annotations

import jax
from flax import nnx

from distil_jax.model.config import ModelConfig
from distil_jax.model.qwen2 import Qwen2
from distil_jax.sharding import DEFAULT_RULES, Rules, state_shardings


def abstract_model(cfg: ModelConfig) -> Qwen2:
  """The model with `jax.ShapeDtypeStruct` leaves: no memory is touched."""
  return nnx.eval_shape(lambda: Qwen2(cfg, rngs=nnx.Rngs(0)))


def create_model(
    cfg: ModelConfig, mesh: jax.sharding.Mesh, rules: Rules = DEFAULT_RULES, seed: int = 0
) -> Qwen2:
  """A freshly initialised, sharded model. The unsharded model never exists."""
  graphdef, abs_state = nnx.split(abstract_model(cfg))
  shardings = state_shardings(abs_state, mesh, rules)

  @jax.jit
  def init():
    return nnx.state(Qwen2(cfg, rngs=nnx.Rngs(seed)))

  state = jax.jit(init, out_shardings=shardings)()
  return nnx.merge(graphdef, state)
