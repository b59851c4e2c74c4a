"""Judge verdict parsing, position-bias removal and the length-controlled win rate."""

import numpy as np
import pytest

from distil_jax.eval import judges


def test_ratings_and_verdicts_are_parsed_from_judge_prose():
  assert judges.parse_rating("Good answer.\nRating: [[7]]") == 7
  assert judges.parse_rating("Rating: [[8.5]] but earlier [[3]] was a typo... final [[6]]") == 6
  assert judges.parse_rating("Rating: 9") == 9
  assert judges.parse_rating("Rating: [[11]]") is None and judges.parse_rating("no score") is None
  assert judges.parse_verdict("A is close but [[B]] wins") == "B"
  assert judges.parse_verdict("undecided") is None


def test_both_positions_cancel_a_judge_that_always_prefers_position_a():
  assert (
      judges.pair_win("A", "A") == 0.5
  )  # first order says model, second says reference: no information
  assert judges.pair_win("A", "B") == 1.0 and judges.pair_win("B", "A") == 0.0
  assert judges.pair_win("C", "B") == 0.75
  assert judges.pair_win(None, "A") is None


def test_length_controlled_win_rate_recovers_the_equal_length_win_probability():
  rng = np.random.default_rng(0)
  n = 4000
  model_len = rng.integers(200, 2000, n)
  ref_len = rng.integers(200, 1200, n)
  diff = model_len - ref_len
  true_a, true_b = -0.4, 1.5  # a judge that likes long answers; at equal length the model wins 40%
  p = 1 / (1 + np.exp(-(true_a + true_b * diff / diff.std())))
  wins = (rng.random(n) < p).astype(float)
  fit = judges.length_controlled_win_rate(list(wins), list(model_len), list(ref_len))
  assert wins.mean() > 0.5  # the raw win rate is inflated by the longer answers
  assert fit["lc_win_rate"] == pytest.approx(1 / (1 + np.exp(0.4)), abs=0.03)
  assert fit["length_coefficient"] == pytest.approx(true_b, abs=0.2)


def test_without_a_length_effect_the_lc_win_rate_is_the_win_rate():
  rng = np.random.default_rng(1)
  wins = list((rng.random(3000) < 0.3).astype(float))
  fit = judges.length_controlled_win_rate(
      wins, list(rng.integers(100, 900, 3000)), list(rng.integers(100, 900, 3000))
  )
  assert fit["lc_win_rate"] == pytest.approx(np.mean(wins), abs=0.02)
