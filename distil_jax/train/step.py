"""The train step: one pure function `(state, batch, rng, frozen) -> (state, metrics)`.

SFT, distillation and DPO share it; they differ only in the loss bound into it (see
`objective` for the contract). `frozen` holds the teacher or a DPO reference as sharded
parameters: passed in, never differentiated, never donated.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from distil_jax.sharding import Rules, logical_to_spec
from distil_jax.train.objective import FieldSpec, Loss, LossContext


class TrainState(NamedTuple):
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: nnx.State  # the student: what export writes
  extra: nnx.State | None  # training-only parameters (fusion projections): optimised and
  #                          checkpointed with the student, never exported
  opt_state: optax.OptState  # over (params, extra)


def _split_micro_batches(batch, k: int):
  """[B, ...] -> [k, B/k, ...], taking rows k apart so every device keeps its own rows."""
  return jax.tree.map(lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch)


def _merge(graphdef, state):
  return None if graphdef is None else nnx.merge(graphdef, state)


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    frozen: Mapping[str, nnx.State],
    *,
    graphdef: nnx.GraphDef,
    extra_graphdef: nnx.GraphDef | None,
    frozen_graphdefs: tuple,
    loss: Loss,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    grad_accum: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
  rng = jax.random.fold_in(rng, state.step)
  frozen_models = {
      name: nnx.merge(g, jax.lax.stop_gradient(frozen[name])) for name, g in frozen_graphdefs
  }
  counts = loss.counts(batch, state.step)  # the whole batch's normalisers, before any split

  def objective(trainable, micro_batch, micro_rng):
    params, extra = trainable
    ctx = LossContext(
        model=nnx.merge(graphdef, params),
        extra=_merge(extra_graphdef, extra),
        frozen=frozen_models,
        rng=micro_rng,
        step=state.step,
    )
    return loss(ctx, micro_batch, counts)

  grad_fn = jax.value_and_grad(objective, has_aux=True)
  trainable = (state.params, state.extra)
  if grad_accum == 1:
    (value, sums), grads = grad_fn(trainable, batch, rng)
  else:
    micro = _split_micro_batches(batch, grad_accum)

    def accumulate(carry, xs):
      micro_batch, i = xs
      (v, s), g = grad_fn(trainable, micro_batch, jax.random.fold_in(rng, i))
      acc = (v, s, jax.tree.map(lambda x: x.astype(jnp.float32), g))
      return jax.tree.map(jnp.add, carry, acc), None

    first = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(grad_fn, trainable, first, rng)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)
    (value, sums), grads = zeros
    (value, sums, grads), _ = jax.lax.scan(
        accumulate, (value, sums, grads), (micro, jnp.arange(grad_accum))
    )

  grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, trainable)
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, trainable)
  params, extra = optax.apply_updates(trainable, updates)
  metrics = {
      "loss": value,
      "grad_norm": grad_norm,
      "lr": jnp.asarray(schedule(state.step), jnp.float32),
      **counts,
  }
  for name, total in sums.items():
    denom = loss.normalisers.get(name)
    metrics[name] = total if denom is None else total / jnp.maximum(counts[denom], 1.0)
  return TrainState(state.step + 1, params, extra, opt_state), metrics


def tree_shardings(tree, mesh, rules: Rules):
  """NamedShardings for a state tree: a Param by its `axes` metadata, anything else
  (step counters, optimizer counts) replicated."""

  def one(x):
    if isinstance(x, nnx.Variable):
      axes = x.get_metadata().get("axes")
      spec = logical_to_spec(axes, rules, x.shape, mesh) if axes else PartitionSpec()
      return x.replace(NamedSharding(mesh, spec))
    return NamedSharding(mesh, PartitionSpec())

  return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh, rules: Rules) -> NamedSharding:
  """The layout of a [batch, seq] field."""
  return NamedSharding(mesh, logical_to_spec(("batch", "seq"), rules))


def field_shardings(
    fields: Mapping[str, FieldSpec], mesh, rules: Rules
) -> dict[str, NamedSharding]:
  """Each declared batch field laid out by its logical axes."""
  return {k: NamedSharding(mesh, logical_to_spec(f.axes, rules)) for k, f in fields.items()}


def jit_train_step(
    *,
    graphdef: nnx.GraphDef,
    loss: Loss,
    tx,
    schedule,
    grad_accum: int,
    state_sharding: Any,
    mesh,
    rules: Rules,
    extra_graphdef: nnx.GraphDef | None = None,
    frozen_graphdefs: Mapping[str, nnx.GraphDef] | None = None,
    frozen_sharding: Any = None,
):
  """Jit `train_step` once: explicit shardings in and out, the old state donated (the frozen
  models are not: they serve every step)."""
  frozen_graphdefs = tuple(sorted((frozen_graphdefs or {}).items()))
  step = functools.partial(
      train_step,
      graphdef=graphdef,
      extra_graphdef=extra_graphdef,
      frozen_graphdefs=frozen_graphdefs,
      loss=loss,
      tx=tx,
      schedule=schedule,
      grad_accum=grad_accum,
  )
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(
      step,
      in_shardings=(
          state_sharding,
          field_shardings(loss.fields(), mesh, rules),
          replicated,
          frozen_sharding if frozen_sharding is not None else {},
      ),
      out_shardings=(state_sharding, replicated),
      donate_argnums=0,
  )
