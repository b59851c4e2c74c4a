"""Build the train state: abstract shapes first, then shardings, then a sharded init or load.

The student starts fresh (seeded init), from a Hugging Face directory, or from the parameters
of a distil-jax checkpoint; resuming a run restores the whole state instead (see `loop`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from distil_jax.train.config import InitKind, TrainConfig
from distil_jax.train.step import TrainState, tree_shardings


def _with_shardings(abstract_tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)


def abstract_train_state(cfg: TrainConfig, mesh, tx: optax.GradientTransformation
                         ) -> tuple[nnx.GraphDef, TrainState]:
  """The graph definition and a TrainState of ShapeDtypeStructs carrying their shardings."""
  from distil_jax.model import abstract_model
  graphdef, params = nnx.split(abstract_model(cfg.model))
  state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                     opt_state=jax.eval_shape(tx.init, params))
  return graphdef, _with_shardings(state, tree_shardings(state, mesh, cfg.rules))


def init_params(cfg: TrainConfig, mesh, abstract_params: nnx.State) -> nnx.State:
  """The student's starting parameters, born sharded."""
  if cfg.init.kind is InitKind.FRESH:
    from distil_jax.model import create_model
    return nnx.state(create_model(cfg.model, mesh, cfg.rules, cfg.seed))
  if cfg.init.kind is InitKind.HF:
    from distil_jax.hf.load import load_hf_state  # cfg.model was read from its config.json
    return nnx.state(load_hf_state(cfg.init.path, cfg.model, mesh, cfg.rules))
  from distil_jax import checkpoints
  if checkpoints.is_model_checkpoint(cfg.init.path):
    model = checkpoints.load_model(cfg.init.path, mesh, cfg.rules, **_runtime_fields(cfg.model))
    return nnx.state(model)
  from distil_jax.train.checkpoint import restore_params
  return restore_params(cfg.init.path, abstract_params)


def _runtime_fields(model_cfg) -> dict:
  """What the train config may choose for a model whose sizes a checkpoint fixes."""
  from distil_jax.train.config import RUNTIME_FIELDS
  return {k: getattr(model_cfg, k) for k in RUNTIME_FIELDS}


def init_train_state(cfg: TrainConfig, mesh, tx: optax.GradientTransformation,
                     abstract_state: TrainState) -> TrainState:
  params = init_params(cfg, mesh, abstract_state.params)
  opt_shardings = jax.tree.map(lambda a: a.sharding, abstract_state.opt_state)
  opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
  step = jax.device_put(jnp.zeros((), jnp.int32), abstract_state.step.sharding)
  return TrainState(step=step, params=params, opt_state=opt_state)
