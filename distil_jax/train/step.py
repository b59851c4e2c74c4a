"""The train step: one pure function `(state, batch, rng) -> (state, metrics)`.

SFT, distillation and DPO share it; they differ only in the `loss_fn` bound into it.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from distil_jax.sharding import Rules, logical_to_spec

LossFn = Callable[[nnx.Module, dict[str, jax.Array], jax.Array], tuple[jax.Array, dict]]


class TrainState(NamedTuple):
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: nnx.State
  opt_state: optax.OptState


def _split_micro_batches(batch, k: int):
  """[B, ...] -> [k, B/k, ...], taking rows k apart so every device keeps its own rows."""
  return jax.tree.map(
      lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch)


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               graphdef: nnx.GraphDef, loss_fn: LossFn, tx: optax.GradientTransformation,
               schedule: optax.Schedule, grad_accum: int = 1
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  rng = jax.random.fold_in(rng, state.step)

  def loss_of(params, micro_batch, micro_rng):
    return loss_fn(nnx.merge(graphdef, params), micro_batch, micro_rng)

  grad_fn = jax.value_and_grad(loss_of, has_aux=True)
  if grad_accum == 1:
    (loss_sum, aux), grads = grad_fn(state.params, batch, rng)
  else:
    micro = _split_micro_batches(batch, grad_accum)

    def accumulate(carry, xs):
      micro_batch, i = xs
      (l, a), g = grad_fn(state.params, micro_batch, jax.random.fold_in(rng, i))
      acc = (l, a, jax.tree.map(lambda x: x.astype(jnp.float32), g))
      return jax.tree.map(jnp.add, carry, acc), None

    first = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(grad_fn, state.params, first, rng)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)
    (loss_sum, aux), grads = zeros
    (loss_sum, aux, grads), _ = jax.lax.scan(
        accumulate, (loss_sum, aux, grads), (micro, jnp.arange(grad_accum)))

  # Normalise once, by every counted token of the whole batch.
  tokens = aux["tokens"]
  denom = jnp.maximum(tokens, 1.0)
  grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grads, state.params)
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      "loss": loss_sum / denom,
      "tokens": tokens,
      "grad_norm": grad_norm,
      "lr": jnp.asarray(schedule(state.step), jnp.float32),
  }
  if "correct" in aux:
    metrics["accuracy"] = aux["correct"] / denom
  return TrainState(state.step + 1, params, opt_state), metrics


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
  return NamedSharding(mesh, logical_to_spec(("batch", "seq"), rules))


def jit_train_step(*, graphdef: nnx.GraphDef, loss_fn: LossFn, tx, schedule, grad_accum: int,
                   state_sharding: Any, mesh, rules: Rules):
  """Jit `train_step` once: explicit shardings in and out, the old state donated."""
  step = functools.partial(train_step, graphdef=graphdef, loss_fn=loss_fn, tx=tx,
                           schedule=schedule, grad_accum=grad_accum)
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(step,
                 in_shardings=(state_sharding, batch_sharding(mesh, rules), replicated),
                 out_shardings=(state_sharding, replicated),
                 donate_argnums=0)
