"""Preference losses over per-sequence quantities: pure functions, one value per pair.

Every function takes, for a batch of B pairs (x, y_w, y_l) -- prompt, chosen, rejected:
- `policy_chosen_B`, `policy_rejected_B`: log pi_theta(y|x), the policy's log-probabilities of
  the response tokens summed over the response (prompt tokens never count);
- `ref_chosen_B`, `ref_rejected_B`: the same under the frozen reference pi_ref;
- `chosen_tokens_B`, `rejected_tokens_B`: |y_w|, |y_l|, the number of response tokens;
and returns per-pair values `[B]` in float32, so the caller sums over its micro-batch and
normalises once by the number of pairs in the whole global batch.

Notation: sigma is the logistic function, and the implicit rewards are
  r_w = beta * (log pi_theta(y_w|x) - log pi_ref(y_w|x)),  r_l likewise for y_l.

Losses (see each function for its formula and source):
- `sigmoid_dpo`: DPO (Rafailov et al. 2023) with conservative label smoothing (cDPO, Mitchell 2023);
- `ipo`: IPO (Azar et al. 2023);
- `length_normalised_dpo`: DPO on log-probabilities averaged per response token (the
  length-normalised DPO of Tulu 3, Lambert et al. 2024; Meng et al. 2024, table 4);
- `simpo`: SimPO (Meng, Xia, Chen 2024), reference-free with a target margin gamma;
- `chosen_nll`: the RPO-style SFT term on the chosen answer (Pang et al. 2024).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

KINDS = ("sigmoid", "ipo", "length_normalised", "simpo")


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _smoothed_logistic_loss(h_B, label_smoothing: float):
  """-(1 - eps) log sigma(h) - eps log sigma(-h): the Bradley-Terry NLL when a fraction eps of
  the preference labels is assumed flipped (cDPO)."""
  return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(h_B) - label_smoothing * jax.nn.log_sigmoid(
      -h_B
  )


def dpo_rewards(policy_chosen_B, policy_rejected_B, ref_chosen_B, ref_rejected_B, *, beta: float):
  """(r_w, r_l) = beta * (log pi_theta(y|x) - log pi_ref(y|x)) for the chosen and rejected."""
  return (
      beta * (_f32(policy_chosen_B) - _f32(ref_chosen_B)),
      beta * (_f32(policy_rejected_B) - _f32(ref_rejected_B)),
  )


def sigmoid_dpo(
    policy_chosen_B,
    policy_rejected_B,
    ref_chosen_B,
    ref_rejected_B,
    *,
    beta: float,
    label_smoothing: float = 0.0,
):
  """DPO (Rafailov et al. 2023, eq. 7), conservative form (cDPO, Mitchell 2023):

    h = beta * [(log pi_theta(y_w|x) - log pi_ref(y_w|x)) - (log pi_theta(y_l|x) - log pi_ref(y_l|x))]
    L = -(1 - eps) log sigma(h) - eps log sigma(-h)

  eps = `label_smoothing` = 0 is the original DPO loss.
  """
  r_w, r_l = dpo_rewards(
      policy_chosen_B, policy_rejected_B, ref_chosen_B, ref_rejected_B, beta=beta
  )
  return _smoothed_logistic_loss(r_w - r_l, label_smoothing)


def ipo(policy_chosen_B, policy_rejected_B, ref_chosen_B, ref_rejected_B, *, beta: float):
  """IPO (Azar et al. 2023, the sampled IPO loss), with tau = `beta`:

    h = (log pi_theta(y_w|x) - log pi_ref(y_w|x)) - (log pi_theta(y_l|x) - log pi_ref(y_l|x))
    L = (h - 1 / (2 tau))^2

  The log-probabilities are the summed ones of the paper (TRL's `ipo` averages them per token).
  """
  h = (_f32(policy_chosen_B) - _f32(ref_chosen_B)) - (
      _f32(policy_rejected_B) - _f32(ref_rejected_B)
  )
  return (h - 1.0 / (2.0 * beta)) ** 2


def length_normalised_rewards(
    policy_chosen_B,
    policy_rejected_B,
    ref_chosen_B,
    ref_rejected_B,
    chosen_tokens_B,
    rejected_tokens_B,
    *,
    beta: float,
):
  """(r_w, r_l) = beta / |y| * (log pi_theta(y|x) - log pi_ref(y|x))."""
  n_w = jnp.maximum(_f32(chosen_tokens_B), 1.0)
  n_l = jnp.maximum(_f32(rejected_tokens_B), 1.0)
  return (
      beta * (_f32(policy_chosen_B) - _f32(ref_chosen_B)) / n_w,
      beta * (_f32(policy_rejected_B) - _f32(ref_rejected_B)) / n_l,
  )


def length_normalised_dpo(
    policy_chosen_B,
    policy_rejected_B,
    ref_chosen_B,
    ref_rejected_B,
    chosen_tokens_B,
    rejected_tokens_B,
    *,
    beta: float,
    label_smoothing: float = 0.0,
):
  """Length-normalised DPO (Lambert et al. 2024, Tulu 3; Meng et al. 2024, table 4):

    h = beta * [ (log pi_theta(y_w|x) - log pi_ref(y_w|x)) / |y_w|
               - (log pi_theta(y_l|x) - log pi_ref(y_l|x)) / |y_l| ]
    L = -(1 - eps) log sigma(h) - eps log sigma(-h)

  Averaging per response token removes plain DPO's incentive to move length: a longer chosen
  answer no longer buys a larger margin by having more tokens.
  """
  r_w, r_l = length_normalised_rewards(
      policy_chosen_B,
      policy_rejected_B,
      ref_chosen_B,
      ref_rejected_B,
      chosen_tokens_B,
      rejected_tokens_B,
      beta=beta,
  )
  return _smoothed_logistic_loss(r_w - r_l, label_smoothing)


def simpo_rewards(
    policy_chosen_B, policy_rejected_B, chosen_tokens_B, rejected_tokens_B, *, beta: float
):
  """(r_w, r_l) = beta / |y| * log pi_theta(y|x): SimPO's reference-free reward."""
  return (
      beta * _f32(policy_chosen_B) / jnp.maximum(_f32(chosen_tokens_B), 1.0),
      beta * _f32(policy_rejected_B) / jnp.maximum(_f32(rejected_tokens_B), 1.0),
  )


def simpo(
    policy_chosen_B,
    policy_rejected_B,
    chosen_tokens_B,
    rejected_tokens_B,
    *,
    beta: float,
    gamma: float,
    label_smoothing: float = 0.0,
):
  """SimPO (Meng, Xia, Chen 2024, the SimPO objective), reference-free:

    h = beta / |y_w| * log pi_theta(y_w|x) - beta / |y_l| * log pi_theta(y_l|x) - gamma
    L = -(1 - eps) log sigma(h) - eps log sigma(-h)

  gamma is the target reward margin itself (TRL's `gamma_beta_ratio` is gamma / beta).
  """
  r_w, r_l = simpo_rewards(
      policy_chosen_B, policy_rejected_B, chosen_tokens_B, rejected_tokens_B, beta=beta
  )
  return _smoothed_logistic_loss(r_w - r_l - gamma, label_smoothing)


def chosen_nll(policy_chosen_B, chosen_tokens_B):
  """The NLL term of RPO (Pang et al. 2024, Iterative Reasoning Preference Optimization): the chosen answer's NLL per token,

    L_NLL = -log pi_theta(y_w|x) / |y_w|,

  added to the preference loss with a weight alpha (`DPOObjective.sft_weight`).
  """
  return -_f32(policy_chosen_B) / jnp.maximum(_f32(chosen_tokens_B), 1.0)


def reward_metrics(chosen_reward_B, rejected_reward_B) -> dict[str, jax.Array]:
  """Per-pair metric values [B] (sum them, divide by the pairs): reward accuracy (r_w > r_l),
  margin r_w - r_l, and the chosen and rejected rewards."""
  r_w, r_l = _f32(chosen_reward_B), _f32(rejected_reward_B)
  return {
      "reward_accuracy": (r_w > r_l).astype(jnp.float32),
      "reward_margin": r_w - r_l,
      "chosen_reward": r_w,
      "rejected_reward": r_l,
  }


@dataclasses.dataclass(frozen=True, kw_only=True)
class DPOObjective:
  """One preference loss with its settings; `__call__` gives per-pair losses and rewards.

  kind: "sigmoid" | "ipo" | "length_normalised" | "simpo"; beta: the KL strength (IPO's tau);
  label_smoothing: cDPO's eps (not for IPO); gamma: SimPO's margin; sft_weight: RPO's alpha.
  """

  kind: str = "sigmoid"
  beta: float = 0.1
  label_smoothing: float = 0.0
  gamma: float = 0.0
  sft_weight: float = 0.0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"DPO loss kind {self.kind!r}: expected one of {KINDS}")
    if not self.beta > 0:
      raise ValueError(f"DPO beta must be > 0, got {self.beta}")
    if not 0.0 <= self.label_smoothing < 0.5:
      raise ValueError(f"DPO label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
    if self.kind == "ipo" and self.label_smoothing:
      raise ValueError("IPO has no label smoothing")
    if self.gamma and self.kind != "simpo":
      raise ValueError(f"gamma is SimPO's margin; kind {self.kind!r} has none")

  @property
  def needs_reference(self) -> bool:
    return self.kind != "simpo"

  def __call__(
      self,
      policy_chosen_B,
      policy_rejected_B,
      ref_chosen_B,
      ref_rejected_B,
      chosen_tokens_B,
      rejected_tokens_B,
  ):
    """-> (loss [B], chosen reward [B], rejected reward [B]); the reference arrays are ignored
    (may be None) for SimPO."""
    args = (policy_chosen_B, policy_rejected_B, ref_chosen_B, ref_rejected_B)
    eps = self.label_smoothing
    if self.kind == "simpo":
      r_w, r_l = simpo_rewards(
          policy_chosen_B, policy_rejected_B, chosen_tokens_B, rejected_tokens_B, beta=self.beta
      )
      loss = simpo(
          policy_chosen_B,
          policy_rejected_B,
          chosen_tokens_B,
          rejected_tokens_B,
          beta=self.beta,
          gamma=self.gamma,
          label_smoothing=eps,
      )
    elif self.kind == "length_normalised":
      r_w, r_l = length_normalised_rewards(
          *args, chosen_tokens_B, rejected_tokens_B, beta=self.beta
      )
      loss = length_normalised_dpo(
          *args, chosen_tokens_B, rejected_tokens_B, beta=self.beta, label_smoothing=eps
      )
    else:
      r_w, r_l = dpo_rewards(*args, beta=self.beta)
      loss = (
          ipo(*args, beta=self.beta)
          if self.kind == "ipo"
          else sigmoid_dpo(*args, beta=self.beta, label_smoothing=eps)
      )
    if self.sft_weight:
      loss = loss + self.sft_weight * chosen_nll(policy_chosen_B, chosen_tokens_B)
    return loss, r_w, r_l
