"""Each preference loss equals a float64 NumPy reference of its published formula, gradients
(with respect to the policy's log-probabilities) included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distil_jax.train import dpo_losses as D


def _np_log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def _np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def pairs():
  rng = np.random.default_rng(0)
  B = 16
  n_w = rng.integers(1, 40, B).astype(np.float64)
  n_l = rng.integers(1, 40, B).astype(np.float64)
  # Summed log-probs scale with length; a wide spread reaches both tails of log sigma.
  return dict(
      pc=-n_w * rng.uniform(0.2, 3.0, B),
      pr=-n_l * rng.uniform(0.2, 3.0, B),
      rc=-n_w * rng.uniform(0.2, 3.0, B),
      rr=-n_l * rng.uniform(0.2, 3.0, B),
      nw=n_w,
      nl=n_l,
  )


def _check(jax_fn, np_value_and_grads, p, rtol=2e-5):
  """jax_fn(pc, pr) -> loss [B]; np_value_and_grads() -> (loss, dloss/dpc, dloss/dpr) float64."""
  pc, pr = jnp.float32(p["pc"]), jnp.float32(p["pr"])
  loss = jax_fn(pc, pr)
  g_pc, g_pr = jax.grad(lambda a, b: jnp.sum(jax_fn(a, b)), argnums=(0, 1))(pc, pr)
  want, want_pc, want_pr = np_value_and_grads()
  assert loss.dtype == jnp.float32 and loss.shape == want.shape
  np.testing.assert_allclose(loss, want, rtol=rtol, atol=1e-6)
  np.testing.assert_allclose(g_pc, want_pc, rtol=rtol, atol=1e-6)
  np.testing.assert_allclose(g_pr, want_pr, rtol=rtol, atol=1e-6)


def _np_smoothed(h, eps):
  """value and d/dh of -(1-eps) log sig(h) - eps log sig(-h)."""
  value = -(1 - eps) * _np_log_sigmoid(h) - eps * _np_log_sigmoid(-h)
  dh = -(1 - eps) * (1 - _np_sigmoid(h)) + eps * _np_sigmoid(h)
  return value, dh


@pytest.mark.parametrize("beta,eps", [(0.1, 0.0), (0.5, 0.2), (2.0, 0.0)])
def test_sigmoid_dpo_matches_rafailov_and_cdpo(pairs, beta, eps):
  p = pairs

  def reference():
    h = beta * ((p["pc"] - p["rc"]) - (p["pr"] - p["rr"]))
    value, dh = _np_smoothed(h, eps)
    return value, dh * beta, -dh * beta

  _check(
      lambda pc, pr: D.sigmoid_dpo(pc, pr, p["rc"], p["rr"], beta=beta, label_smoothing=eps),
      reference,
      p,
  )


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_ipo_matches_azar(pairs, tau):
  p = pairs

  def reference():
    h = (p["pc"] - p["rc"]) - (p["pr"] - p["rr"])
    value = (h - 1 / (2 * tau)) ** 2
    return value, 2 * (h - 1 / (2 * tau)), -2 * (h - 1 / (2 * tau))

  _check(lambda pc, pr: D.ipo(pc, pr, p["rc"], p["rr"], beta=tau), reference, p, rtol=5e-5)


@pytest.mark.parametrize("beta,eps", [(0.1, 0.0), (1.0, 0.1)])
def test_length_normalised_dpo_averages_per_response_token(pairs, beta, eps):
  p = pairs

  def reference():
    h = beta * ((p["pc"] - p["rc"]) / p["nw"] - (p["pr"] - p["rr"]) / p["nl"])
    value, dh = _np_smoothed(h, eps)
    return value, dh * beta / p["nw"], -dh * beta / p["nl"]

  _check(
      lambda pc, pr: D.length_normalised_dpo(
          pc, pr, p["rc"], p["rr"], p["nw"], p["nl"], beta=beta, label_smoothing=eps
      ),
      reference,
      p,
  )


@pytest.mark.parametrize("beta,gamma", [(2.0, 0.5), (10.0, 1.6)])
def test_simpo_matches_meng_and_ignores_the_reference(pairs, beta, gamma):
  p = pairs

  def reference():
    h = beta * p["pc"] / p["nw"] - beta * p["pr"] / p["nl"] - gamma
    value, dh = _np_smoothed(h, 0.0)
    return value, dh * beta / p["nw"], -dh * beta / p["nl"]

  _check(lambda pc, pr: D.simpo(pc, pr, p["nw"], p["nl"], beta=beta, gamma=gamma), reference, p)
  objective = D.DPOObjective(kind="simpo", beta=beta, gamma=gamma)
  loss, _, _ = objective(p["pc"], p["pr"], None, None, p["nw"], p["nl"])
  np.testing.assert_allclose(loss, reference()[0], rtol=2e-5)


def test_rpo_sft_term_is_the_chosen_nll_per_token_added_with_its_weight(pairs):
  p, beta, alpha = pairs, 0.1, 0.7

  def reference():
    h = beta * ((p["pc"] - p["rc"]) - (p["pr"] - p["rr"]))
    value, dh = _np_smoothed(h, 0.0)
    return (value - alpha * p["pc"] / p["nw"], dh * beta - alpha / p["nw"], -dh * beta)

  objective = D.DPOObjective(kind="sigmoid", beta=beta, sft_weight=alpha)
  _check(lambda pc, pr: objective(pc, pr, p["rc"], p["rr"], p["nw"], p["nl"])[0], reference, p)


def test_gradients_agree_with_float64_central_differences(pairs):
  """An independent check of the analytic gradients above, on the objective as training uses it."""
  p = pairs
  for objective in (
      D.DPOObjective(kind="length_normalised", beta=0.3, label_smoothing=0.1),
      D.DPOObjective(kind="ipo", beta=0.5, sft_weight=0.2),
  ):

    def np_loss(pc, pr, kind=objective.kind):
      if kind == "ipo":
        h = (pc - p["rc"]) - (pr - p["rr"])
        return np.sum((h - 1 / (2 * 0.5)) ** 2 - 0.2 * pc / p["nw"])
      h = 0.3 * ((pc - p["rc"]) / p["nw"] - (pr - p["rr"]) / p["nl"])
      return np.sum(_np_smoothed(h, 0.1)[0])

    step = 1e-6
    want_pc = np.array(
        [
            (np_loss(p["pc"] + step * e, p["pr"]) - np_loss(p["pc"] - step * e, p["pr"]))
            / (2 * step)
            for e in np.eye(len(p["pc"]))
        ]
    )
    g_pc = jax.grad(
        lambda a: jnp.sum(objective(a, p["pr"], p["rc"], p["rr"], p["nw"], p["nl"])[0])
    )(jnp.float32(p["pc"]))
    np.testing.assert_allclose(g_pc, want_pc, rtol=1e-4, atol=1e-5)


def test_reward_metrics_per_pair(pairs):
  p, beta = pairs, 0.1
  _, r_w, r_l = D.DPOObjective(kind="sigmoid", beta=beta)(
      p["pc"], p["pr"], p["rc"], p["rr"], p["nw"], p["nl"]
  )
  want_w, want_l = beta * (p["pc"] - p["rc"]), beta * (p["pr"] - p["rr"])
  m = D.reward_metrics(r_w, r_l)
  np.testing.assert_allclose(m["chosen_reward"], want_w, rtol=1e-5)
  np.testing.assert_allclose(m["rejected_reward"], want_l, rtol=1e-5)
  np.testing.assert_allclose(m["reward_margin"], want_w - want_l, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(m["reward_accuracy"], (want_w > want_l).astype(np.float32))
  assert 0 < float(m["reward_accuracy"].sum()) < len(r_w)  # both outcomes occur in the fixture


@pytest.mark.parametrize(
    "bad",
    [
        dict(kind="orpo"),
        dict(beta=0.0),
        dict(kind="ipo", label_smoothing=0.1),
        dict(kind="sigmoid", gamma=1.0),
        dict(label_smoothing=0.5),
    ],
)
def test_bad_settings_are_refused_with_a_reason(bad):
  with pytest.raises(ValueError, match="DPO|IPO|gamma"):
    D.DPOObjective(**bad)
