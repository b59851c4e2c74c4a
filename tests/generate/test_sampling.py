"""Token choice on fixed logits: the empirical distribution follows temperature, top-k and top-p."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from distil_jax.generate.sampling import row_keys, sample

LOGITS = np.log(np.array([0.5, 0.25, 0.15, 0.07, 0.03], np.float32))


N = 20000


@functools.partial(jax.jit, static_argnames="any_filter")
def _sample_n(temperature, top_k, top_p, any_filter=True):
  n = N
  logits = jnp.broadcast_to(jnp.asarray(LOGITS), (n, LOGITS.size))
  keys = row_keys(jnp.zeros(n, jnp.uint32), jnp.arange(n, dtype=jnp.uint32))
  full = lambda v, dt: jnp.full((n,), v, dt)
  ids = sample(
      logits,
      keys,
      full(temperature, jnp.float32),
      full(top_k, jnp.int32),
      full(top_p, jnp.float32),
      any_sampling=True,
      any_filter=any_filter,
  )
  return ids


def _frequencies(temperature, top_k, top_p, any_filter=True):
  ids = _sample_n(jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p), any_filter)
  return np.bincount(np.asarray(ids), minlength=LOGITS.size) / N


def test_temperature_1_samples_the_softmax():
  np.testing.assert_allclose(_frequencies(1.0, 0, 1.0), np.exp(LOGITS), atol=0.015)


def test_without_filters_the_sort_free_path_samples_the_same_distributions():
  for t in (1.0, 0.5):
    p = np.exp(LOGITS / t) / np.exp(LOGITS / t).sum()
    np.testing.assert_allclose(_frequencies(t, 0, 1.0, any_filter=False), p, atol=0.015)
  assert _frequencies(0.0, 0, 1.0, any_filter=False)[0] == 1.0  # greedy rows stay argmax


def test_temperature_sharpens():
  p = np.exp(LOGITS / 0.5) / np.exp(LOGITS / 0.5).sum()
  np.testing.assert_allclose(_frequencies(0.5, 0, 1.0), p, atol=0.015)


def test_top_k_renormalises_over_the_k_best():
  p = np.array([0.5, 0.25, 0, 0, 0]) / 0.75
  np.testing.assert_allclose(_frequencies(1.0, 2, 1.0), p, atol=0.015)


def test_top_p_keeps_the_smallest_prefix_reaching_p():
  # 0.5 + 0.25 < 0.8 <= 0.5 + 0.25 + 0.15: three tokens stay.
  p = np.array([0.5, 0.25, 0.15, 0, 0]) / 0.9
  np.testing.assert_allclose(_frequencies(1.0, 0, 0.8), p, atol=0.015)


def test_temperature_0_is_argmax_even_in_a_sampling_batch():
  assert _frequencies(0.0, 0, 1.0)[0] == 1.0
