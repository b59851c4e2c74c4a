"""Distillation schedules: ramps in the step number, the progressive fusion layer weights, and the
uniform student-to-teacher layer map.

The ramps are traceable in `step` (an int32 array inside the jitted step) and `total_steps`; the
kind, the layer count and the fractions are static Python values.
"""

from __future__ import annotations

import enum
import numbers

import jax
import jax.numpy as jnp
import numpy as np


class Ramp(enum.Enum):
  """How a value moves from `start` to `end` over a window, f = clip(step / length, 0, 1)."""

  CONSTANT = "constant"  # `end` from the first step of the window (a step; `start` unused)
  LINEAR = "linear"  # start + (end - start) f
  COSINE = "cosine"  # start + (end - start) (1 - cos(pi f)) / 2: flat at both ends


def ramp(
    kind: Ramp, start: float, end: float, step: jax.Array | int, total_steps: jax.Array | int
) -> jax.Array:
  """The value at `step` of a ramp from `start` (step 0) to `end` (step `total_steps` and on).

  float32 scalar (or the broadcast shape of `step`). Before step 0 the fraction is 0 (`start`,
  or `end` for CONSTANT); `total_steps <= 0` means the ramp is already done (`end`). Used for
  the CE/KD mix alpha, the temperature T, and each fusion layer's weight."""
  if not isinstance(kind, Ramp):
    raise ValueError(
        f"ramp kind must be a Ramp, got {kind!r}; choose from " f"{[r.value for r in Ramp]}"
    )
  start, end = jnp.float32(start), jnp.float32(end)
  if kind is Ramp.CONSTANT:
    return jnp.broadcast_to(end, jnp.shape(step)).astype(jnp.float32)
  step = jnp.asarray(step, jnp.float32)
  total = jnp.asarray(total_steps, jnp.float32)
  frac = jnp.where(total > 0, jnp.clip(step / jnp.maximum(total, 1e-30), 0.0, 1.0), 1.0)
  if kind is Ramp.COSINE:
    frac = 0.5 * (1.0 - jnp.cos(jnp.pi * frac))
  return start + (end - start) * frac


def fusion_layer_entry_fractions(n: int, enter_fraction: float) -> np.ndarray:
  """float64 `[n]`, bottom -> top: the fraction of training at which each mapped layer enters.

  The layer j-th from the top (j = 0 for the top layer) enters at j / n * enter_fraction."""
  from_top = np.arange(n)[::-1]
  return from_top / n * enter_fraction


def fusion_layer_weights(
    n: int,
    step: jax.Array | int,
    total_steps: jax.Array | int,
    ramp_kind: Ramp,
    max_weight: float,
    *,
    enter_fraction: float = 0.5,
    ramp_fraction: float | None = None,
) -> jax.Array:
  """The progressive fusion schedule: float32 `[n]` weights of n mapped layer pairs, ordered
  bottom -> top like the layer map.

  Layers enter from the top down. The layer j-th from the top (j = 0 the top layer, j = n - 1
  the bottom one) enters at step b_j = j / n * enter_fraction * total_steps and its weight
  ramps from 0 to `max_weight` over its own window [b_j, b_j + r * total_steps], r =
  `ramp_fraction` (default enter_fraction / n: each layer reaches full weight as the next one
  enters, and every layer is at full weight from enter_fraction * total_steps on). Before b_j
  a layer's weight is 0, whatever the ramp (a CONSTANT ramp jumps to `max_weight` at b_j).
  enter_fraction = 0 starts every layer at once.

  Why top first: the teacher's top layers hold the representation closest to its output
  distribution, which logit KD already targets, so the student's top layers are pulled first;
  deeper (lower) matching, a stronger constraint on a narrower student, comes in once those
  are in place."""
  if not isinstance(n, numbers.Integral) or n < 1:
    raise ValueError(f"fusion needs at least one mapped layer pair, got n={n!r}")
  if not 0.0 <= enter_fraction <= 1.0:
    raise ValueError(f"enter_fraction must be in [0, 1], got {enter_fraction!r}")
  if ramp_fraction is None:
    ramp_fraction = enter_fraction / n
  if ramp_fraction < 0.0:
    raise ValueError(f"ramp_fraction must be >= 0, got {ramp_fraction!r}")
  total = jnp.asarray(total_steps, jnp.float32)
  step = jnp.asarray(step, jnp.float32)
  begin_N = jnp.asarray(fusion_layer_entry_fractions(n, enter_fraction), jnp.float32) * total
  since_N = step - begin_N
  weights_N = ramp(ramp_kind, 0.0, max_weight, since_N, ramp_fraction * total)
  return jnp.where(since_N >= 0, weights_N, 0.0).astype(jnp.float32)


def _round_div(a: int, b: int) -> int:
  """round(a / b) for non-negative ints, halves up, in exact integer arithmetic."""
  return (2 * a + b) // (2 * b)


def uniform_layer_map(
    n_student_layers: int, n_teacher_layers: int, n_pairs: int | None = None
) -> tuple[tuple[int, int], ...]:
  """(student_layer, teacher_layer) pairs, 0-based, bottom -> top, at matching relative depth.

  Pair k = 1..P (P = `n_pairs`, default min(student, teacher layers)) takes the outputs of the
  layers at relative depth k / P: student layer round(k S / P) - 1 and teacher layer
  round(k T / P) - 1. The last student layer always maps to the last teacher layer, and no layer
  appears twice on either side."""
  for name, value in (
      ("n_student_layers", n_student_layers),
      ("n_teacher_layers", n_teacher_layers),
  ):
    if not isinstance(value, numbers.Integral) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  most = min(n_student_layers, n_teacher_layers)
  if n_pairs is None:
    n_pairs = most
  if not isinstance(n_pairs, numbers.Integral) or not 1 <= n_pairs <= most:
    raise ValueError(
        f"n_pairs must be an integer in [1, {most}] (a student of "
        f"{n_student_layers} layers and a teacher of {n_teacher_layers}: each layer "
        f"maps once), got {n_pairs!r}"
    )
  return tuple(
      (_round_div(k * n_student_layers, n_pairs) - 1, _round_div(k * n_teacher_layers, n_pairs) - 1)
      for k in range(1, n_pairs + 1)
  )
