"""The contract between the train step and a loss.

A loss is a frozen dataclass that declares what it reads and what it measures:

- `fields() -> {key: FieldSpec}`: every batch key it reads, with dtype and logical axes. The loop
  sends exactly these to the device, sharded by their axes: per-position extras (top-k teacher
  ids, `("batch", "seq", None)`) and per-example ones (DPO reference log-probs, `("batch",)`)
  travel like `input_ids`.
- `frozen_models`: the names it expects in `ctx.frozen` (a teacher, a DPO reference).
- `counts(batch, step) -> {name: scalar}`: its normalisers, computed from the WHOLE global batch
  before any micro-batch runs (they never depend on parameters): tokens a response has, pairs,
  layer-tokens of the fusion schedule at this step.
- `normalisers`: metric sum key -> the count that divides it.
- `__call__(ctx, batch, counts) -> (objective, sums)`: the objective of this (micro-)batch,
  already divided by the global counts, so micro-batch objectives and their gradients simply add
  up, plus float32 metric sums. The step reports `loss` (the summed objective), every count, and
  every sum divided once by its count.

Masking, counting and normalising thus happen once, over the whole batch and all micro-batches.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class FieldSpec:
  """A batch field: dtype and logical axes (one name per dimension)."""

  dtype: Any
  axes: tuple[str | None, ...]


# The packed-sequence fields of DEVELOPERS.md; every token loss reads these.
TOKEN_FIELDS: dict[str, FieldSpec] = {
    "input_ids": FieldSpec(jnp.int32, ("batch", "seq")),
    "target_ids": FieldSpec(jnp.int32, ("batch", "seq")),
    "loss_mask": FieldSpec(jnp.float32, ("batch", "seq")),
    "segment_ids": FieldSpec(jnp.int32, ("batch", "seq")),
    "positions": FieldSpec(jnp.int32, ("batch", "seq")),
}


class LossContext(NamedTuple):
  model: nnx.Module  # the student: the parameters being differentiated
  extra: nnx.Module | None  # training-only trainable parameters (fusion projections), or None
  frozen: Mapping[str, nnx.Module]  # teacher / reference: never differentiated, never donated
  rng: jax.Array
  step: jax.Array  # int32 scalar: optimizer steps taken before this one (for schedules)


class Loss(Protocol):
  frozen_models: tuple[str, ...]
  normalisers: Mapping[str, str]

  def fields(self) -> dict[str, FieldSpec]:
    ...

  def counts(self, batch: Mapping[str, jax.Array], step: jax.Array) -> dict[str, jax.Array]:
    ...

  def __call__(
      self, ctx: LossContext, batch: Mapping[str, jax.Array], counts: Mapping[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    ...


def response_tokens(batch: Mapping[str, jax.Array]) -> jax.Array:
  """The number of tokens `loss_mask` counts: the usual normaliser of a token loss."""
  return jnp.sum(batch["loss_mask"].astype(jnp.float32))


def per_token(total: jax.Array, count: jax.Array) -> jax.Array:
  """`total / count`, and 0 for an empty batch rather than NaN."""
  return total / jnp.maximum(count, 1.0)


def apply_loss(
    loss: Loss,
    model: nnx.Module,
    batch: Mapping[str, jax.Array],
    *,
    frozen: Mapping[str, nnx.Module] | None = None,
    extra: nnx.Module | None = None,
    rng: jax.Array | None = None,
    step: int = 0,
) -> tuple[jax.Array, dict[str, jax.Array], dict[str, jax.Array]]:
  """(objective, sums, counts) of one whole batch, outside the train step: for evaluation,
  benchmarks and tests. Differentiable in whatever `model` and `extra` close over."""
  step = jnp.asarray(step, jnp.int32)
  counts = loss.counts(batch, step)
  ctx = LossContext(
      model=model,
      extra=extra,
      frozen=dict(frozen or {}),
      rng=jax.random.key(0) if rng is None else rng,
      step=step,
  )
  objective, sums = loss(ctx, batch, counts)
  return objective, sums, counts
