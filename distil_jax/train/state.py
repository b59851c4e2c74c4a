"""Build the train state: abstract shapes first, then shardings, then a sharded init or load.

The student starts fresh (seeded init), or from any checkpoint `distil_jax.loading` opens (a
Hugging Face directory, a distil-jax model checkpoint, a training run); resuming a run restores
the whole state instead (see `loop`). Training-only parameters (`extra`, e.g. the fusion
projections) are always born from the seed.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from distil_jax.train.config import InitKind, TrainConfig
from distil_jax.train.step import TrainState, tree_shardings

MakeExtra = Callable[[], nnx.Module]  # builds the training-only module from its own rngs


def _with_shardings(abstract_tree, shardings):
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings
  )


def abstract_train_state(
    cfg: TrainConfig, mesh, tx: optax.GradientTransformation, make_extra: MakeExtra | None = None
) -> tuple[nnx.GraphDef, nnx.GraphDef | None, TrainState]:
  """The graph definitions (student, extra) and a TrainState of ShapeDtypeStructs carrying
  their shardings."""
  from distil_jax.model import abstract_model

  graphdef, params = nnx.split(abstract_model(cfg.model))
  extra_graphdef = extra = None
  if make_extra is not None:
    extra_graphdef, extra = nnx.split(nnx.eval_shape(make_extra))
  state = TrainState(
      step=jax.ShapeDtypeStruct((), jnp.int32),
      params=params,
      extra=extra,
      opt_state=jax.eval_shape(tx.init, (params, extra)),
  )
  return graphdef, extra_graphdef, _with_shardings(state, tree_shardings(state, mesh, cfg.rules))


def init_params(cfg: TrainConfig, mesh, abstract_params: nnx.State) -> nnx.State:
  """The student's starting parameters, born sharded."""
  if cfg.init.kind is InitKind.FRESH:
    from distil_jax.model import create_model

    return nnx.state(create_model(cfg.model, mesh, cfg.rules, cfg.seed))
  from distil_jax.loading import open_model

  model = open_model(cfg.init.path, mesh=mesh, rules=cfg.rules, **_runtime_fields(cfg.model))
  params = nnx.state(model)
  shapes = [(x.shape, jnp.dtype(x.dtype)) for x in jax.tree.leaves(params)]
  expected = [(x.shape, jnp.dtype(x.dtype)) for x in jax.tree.leaves(abstract_params)]
  if shapes != expected:
    raise ValueError(
        f"init.path {cfg.init.path}: its parameters do not match the configured "
        "student's shapes and dtypes"
    )
  return params


def _runtime_fields(model_cfg) -> dict:
  """What the train config may choose for a model whose sizes a checkpoint fixes."""
  from distil_jax.train.config import RUNTIME_FIELDS

  return {k: getattr(model_cfg, k) for k in RUNTIME_FIELDS}


def init_train_state(
    cfg: TrainConfig,
    mesh,
    tx: optax.GradientTransformation,
    abstract_state: TrainState,
    make_extra: MakeExtra | None = None,
) -> TrainState:
  params = init_params(cfg, mesh, abstract_state.params)
  extra = None
  if make_extra is not None:
    extra_shardings = jax.tree.map(lambda a: a.sharding, abstract_state.extra)
    extra = jax.jit(lambda: nnx.state(make_extra()), out_shardings=extra_shardings)()
  opt_shardings = jax.tree.map(lambda a: a.sharding, abstract_state.opt_state)
  opt_state = jax.jit(tx.init, out_shardings=opt_shardings)((params, extra))
  step = jax.device_put(jnp.zeros((), jnp.int32), abstract_state.step.sharding)
  return TrainState(step=step, params=params, extra=extra, opt_state=opt_state)
