"""Distillation schedules: alpha / T ramps, the top-down fusion layer weights, the layer map."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distil_jax.train.kd_schedules import (
    Ramp,
    fusion_layer_entry_fractions,
    fusion_layer_weights,
    ramp,
    uniform_layer_map,
)


@pytest.mark.parametrize("start,end", [(0.0, 1.0), (2.0, 0.5)])
def test_ramps_start_middle_end(start, end):
  at = lambda kind, step: float(ramp(kind, start, end, jnp.int32(step), 200))
  for kind in Ramp:
    assert at(kind, 200) == pytest.approx(end) and at(kind, 500) == pytest.approx(end)
  assert at(Ramp.CONSTANT, 0) == pytest.approx(end)  # no ramp: the target from the start
  for kind in (Ramp.LINEAR, Ramp.COSINE):
    assert at(kind, 0) == pytest.approx(start) and at(kind, -5) == pytest.approx(start)
    assert at(kind, 100) == pytest.approx((start + end) / 2)  # both are symmetric about half
  assert at(Ramp.LINEAR, 50) == pytest.approx(start + 0.25 * (end - start))
  assert at(Ramp.COSINE, 50) == pytest.approx(start + (1 - np.cos(np.pi / 4)) / 2 * (end - start))


@pytest.mark.parametrize("kind", list(Ramp), ids=lambda r: r.value)
def test_ramps_are_monotone_and_traceable(kind):
  values = jax.jit(jax.vmap(lambda s: ramp(kind, 0.1, 0.9, s, 100)))(jnp.arange(-10, 130))
  assert values.dtype == jnp.float32
  assert np.all(np.diff(np.asarray(values)) >= 0)
  down = jax.jit(jax.vmap(lambda s: ramp(kind, 4.0, 1.0, s, 100)))(jnp.arange(0, 130))
  assert np.all(np.diff(np.asarray(down)) <= 0)
  # traced total steps, and a finished (empty) ramp
  assert float(jax.jit(lambda s, n: ramp(kind, 0.0, 1.0, s, n))(3, jnp.int32(0))) == 1.0


def test_ramp_refuses_a_name_instead_of_the_enum():
  with pytest.raises(ValueError, match="Ramp"):
    ramp("linear", 0.0, 1.0, 0, 10)


def weights_over_training(kind, n=4, total=200, **kw):
  f = jax.jit(jax.vmap(lambda s: fusion_layer_weights(n, s, total, kind, 0.5, **kw)))
  return np.asarray(f(jnp.arange(0, total + 1, dtype=jnp.int32)))  # [steps, n], bottom -> top


@pytest.mark.parametrize("kind", list(Ramp), ids=lambda r: r.value)
def test_fusion_layers_enter_from_the_top_down_and_only_grow(kind):
  w = weights_over_training(kind)
  assert w.shape == (201, 4) and w.dtype == np.float32
  assert np.all(np.diff(w, axis=0) >= 0)  # each layer's weight only grows
  assert np.all(np.diff(w, axis=1) >= 0)  # at every step, a higher layer weighs at least as much
  assert np.all(w[:, :3][w[:, 3] == 0] == 0)  # nothing below before the top layer
  assert np.allclose(w[100:], 0.5)  # all at max_weight from enter_fraction (0.5) on
  first_nonzero = [int(np.argmax(w[:, i] > 0)) for i in range(4)]
  assert first_nonzero == sorted(first_nonzero, reverse=True)  # bottom enters last
  assert w.max() == pytest.approx(0.5)


def test_fusion_windows_are_where_the_docstring_puts_them():
  """n = 4, enter_fraction 0.5, 200 steps: layer j-th from the top enters at j * 25 and ramps
  linearly to max over 25 steps (default ramp_fraction = enter_fraction / n)."""
  np.testing.assert_allclose(fusion_layer_entry_fractions(4, 0.5), [0.375, 0.25, 0.125, 0.0])
  w = weights_over_training(Ramp.LINEAR)
  for j in range(4):
    layer, begin = 3 - j, 25 * j
    assert w[begin, layer] == 0.0
    assert w[begin + 10, layer] == pytest.approx(0.5 * 10 / 25)
    assert w[begin + 25, layer] == pytest.approx(0.5)
    if begin:
      assert w[begin - 1, layer] == 0.0
  w_const = weights_over_training(Ramp.CONSTANT)  # a step at each entry
  assert w_const[0].tolist() == [0.0, 0.0, 0.0, 0.5]
  assert w_const[25].tolist() == [0.0, 0.0, 0.5, 0.5]
  assert w_const[24].tolist() == [0.0, 0.0, 0.0, 0.5]


def test_fusion_schedule_knobs_and_errors():
  together = weights_over_training(Ramp.LINEAR, enter_fraction=0.0, ramp_fraction=0.1)
  assert np.all(together == together[:, :1])  # every layer at once
  assert together[10, 0] == pytest.approx(0.25) and together[20, 0] == pytest.approx(0.5)
  slow = weights_over_training(Ramp.LINEAR, enter_fraction=0.5, ramp_fraction=0.5)
  assert slow[150, 3] == pytest.approx(0.5) and slow[150, 0] < 0.5  # windows overlap
  assert np.all(weights_over_training(Ramp.COSINE, n=1)[100:] == 0.5)
  with pytest.raises(ValueError, match="at least one"):
    fusion_layer_weights(0, 0, 10, Ramp.LINEAR, 1.0)
  with pytest.raises(ValueError, match="enter_fraction"):
    fusion_layer_weights(2, 0, 10, Ramp.LINEAR, 1.0, enter_fraction=1.5)


def test_uniform_layer_map_pairs_equal_relative_depths():
  pairs = uniform_layer_map(24, 28)  # Qwen2.5-0.5B student, 7B teacher
  assert len(pairs) == 24 and pairs[-1] == (23, 27)
  student, teacher = zip(*pairs)
  assert list(student) == list(range(24))
  assert all(b > a for a, b in zip(teacher, teacher[1:]))
  for s, t in pairs:  # the same relative depth, to within half a teacher layer
    assert abs((t + 1) / 28 - (s + 1) / 24) <= 0.5 / 28 + 1e-12
  assert uniform_layer_map(28, 80, 4) == ((6, 19), (13, 39), (20, 59), (27, 79))
  assert uniform_layer_map(2, 4) == ((0, 1), (1, 3))
  assert uniform_layer_map(5, 5) == tuple((i, i) for i in range(5))
  assert uniform_layer_map(36, 28, 1) == ((35, 27),)


def test_uniform_layer_map_errors_name_the_problem():
  with pytest.raises(ValueError, match=r"n_pairs must be an integer in \[1, 4\]"):
    uniform_layer_map(4, 8, 5)
  with pytest.raises(ValueError, match="n_student_layers"):
    uniform_layer_map(0, 8)
  with pytest.raises(ValueError, match="n_teacher_layers"):
    uniform_layer_map(4, 2.5)
