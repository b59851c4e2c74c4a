"""The demo table's perplexity interval: resampled examples around exp(sum NLL / sum tokens)."""

import math

import numpy as np

from distil_jax.demo.results import perplexity_interval


def test_perplexity_interval_resamples_examples_around_the_pooled_value():
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 9, 200)
  nll = tokens * rng.uniform(1.0, 3.0, 200)
  pooled = math.exp(nll.sum() / tokens.sum())
  rows = [[float(a), int(b)] for a, b in zip(nll, tokens)]
  m, lo, hi = perplexity_interval({"perplexity": pooled, "per_example": rows}, 1000, 0)
  assert m == pooled and lo < pooled < hi
  assert hi / lo < 1.5  # 200 examples of NLL 1 to 3 a token: a narrow interval
  # every example alike: no spread; no per-example sums: no interval
  same = perplexity_interval({"perplexity": math.e, "per_example": [[2.0, 2]] * 10}, 100, 0)
  assert same == (math.e, math.e, math.e) or np.allclose(same, math.e)
  m, lo, hi = perplexity_interval({"perplexity": 5.0}, 100, 0)
  assert m == 5.0 and math.isnan(lo) and math.isnan(hi)
