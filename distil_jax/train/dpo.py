"""DPO and its variants as a loss of the step contract (`objective`), and its `loss.kind="dpo"`.

Per pair i (prompt x, chosen y_w, rejected y_l), the policy's response log-probabilities
log pi_theta(y|x) = sum over response tokens of log softmax(z_t)[y_t] come from one forward of the
student over the 2B rows [chosen; rejected] and `sequence_logprobs` (chunked over the sequence,
each chunk's body rematerialised: no [B, L, V] logits; 4 LM-head matmuls a token under
differentiation, against 3 for the fused token losses, because the per-sequence loss is nonlinear
in each sequence's sum). The reference's come precomputed in the batch
(`ref_chosen_logp`, `ref_rejected_logp`, from `distil-jax ref-logprobs`) or, with
`online_reference`, from the frozen model "reference" (one forward, no gradient).

    objective = (1 / P) * sum_i L_i,   P = the number of pairs in the whole global batch,

with L_i the per-pair loss of `dpo_losses.DPOObjective` (sigmoid / cDPO, IPO, length-normalised,
SimPO, plus RPO's NLL term). Metrics, averaged per pair: `reward_accuracy`, `reward_margin`,
`chosen_reward`, `rejected_reward` (the implicit rewards of the chosen variant), `chosen_logp`,
`rejected_logp`, `chosen_length`, `rejected_length` (response tokens).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from distil_jax.train.dpo_losses import KINDS, DPOObjective, reward_metrics
from distil_jax.train.loss_config import register
from distil_jax.train.objective import FieldSpec, LossContext
from distil_jax.train.sequence_logprobs import sequence_logprobs

SIDES = ("chosen", "rejected")
SIDE_FIELDS = {
    "input_ids": jnp.int32,
    "target_ids": jnp.int32,
    "loss_mask": jnp.float32,
    "positions": jnp.int32,
    "segment_ids": jnp.int32,
}
METRICS = (
    "reward_accuracy",
    "reward_margin",
    "chosen_reward",
    "rejected_reward",
    "chosen_logp",
    "rejected_logp",
    "chosen_length",
    "rejected_length",
)


def policy_logprobs(model, batch, *, chunk: int, logits_dtype=jnp.float32, positions: int = 0):
  """(chosen [B], rejected [B]) summed response log-probs under `model`, one forward of 2B rows."""
  rows = {k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]]) for k in SIDE_FIELDS}
  h_RxLxD, _ = model.hidden_states(rows["input_ids"], rows["positions"], rows["segment_ids"])
  logp_R = sequence_logprobs(
      h_RxLxD,
      model.unembed_matrix(),
      rows["target_ids"],
      rows["loss_mask"],
      chunk=chunk,
      logits_dtype=logits_dtype,
      positions=positions,
  )
  b = batch["chosen_input_ids"].shape[0]
  return logp_R[:b], logp_R[b:]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DPOLoss:
  """A preference loss over pair batches (see the module docstring)."""

  objective: DPOObjective = DPOObjective()
  online_reference: bool = False  # the frozen model "reference" instead of batch log-probs
  chunk: int = 256
  logits_dtype: Any = jnp.float32
  positions: int = 0  # >0: the LM head only at each row's first K response positions
  normalisers = {name: "pairs" for name in METRICS + ("preference_loss",)}
  rows_per_example = 2  # chosen and rejected: the loop's tokens/s counts both

  @property
  def frozen_models(self) -> tuple[str, ...]:
    return ("reference",) if self.online_reference and self.objective.needs_reference else ()

  @property
  def precomputed_reference(self) -> bool:
    return self.objective.needs_reference and not self.online_reference

  def fields(self) -> dict[str, FieldSpec]:
    out = {
        f"{side}_{k}": FieldSpec(dtype, ("batch", "seq"))
        for side in SIDES
        for k, dtype in SIDE_FIELDS.items()
    }
    if self.precomputed_reference:
      out.update({f"ref_{side}_logp": FieldSpec(jnp.float32, ("batch",)) for side in SIDES})
    return out

  def counts(self, batch, step) -> dict[str, jax.Array]:
    del step
    return {"pairs": jnp.asarray(batch["chosen_input_ids"].shape[0], jnp.float32)}

  def __call__(self, ctx: LossContext, batch, counts):
    policy_w, policy_l = policy_logprobs(
        ctx.model, batch, chunk=self.chunk, logits_dtype=self.logits_dtype, positions=self.positions
    )
    if not self.objective.needs_reference:
      ref_w = ref_l = None
    elif self.online_reference:
      ref_w, ref_l = jax.lax.stop_gradient(
          policy_logprobs(
              ctx.frozen["reference"],
              batch,
              chunk=self.chunk,
              logits_dtype=self.logits_dtype,
              positions=self.positions,
          )
      )
    else:
      ref_w, ref_l = batch["ref_chosen_logp"], batch["ref_rejected_logp"]
    n_w = jnp.sum(batch["chosen_loss_mask"].astype(jnp.float32), axis=-1)
    n_l = jnp.sum(batch["rejected_loss_mask"].astype(jnp.float32), axis=-1)
    loss_B, r_w, r_l = self.objective(policy_w, policy_l, ref_w, ref_l, n_w, n_l)
    sums = {k: jnp.sum(v) for k, v in reward_metrics(r_w, r_l).items()}
    sums.update(
        chosen_logp=jnp.sum(policy_w),
        rejected_logp=jnp.sum(policy_l),
        chosen_length=jnp.sum(n_w),
        rejected_length=jnp.sum(n_l),
        preference_loss=jax.lax.stop_gradient(jnp.sum(loss_B)),
    )
    return jnp.sum(loss_B) / counts["pairs"], sums


@register("dpo")
@dataclasses.dataclass(frozen=True, kw_only=True)
class DPOConfig:
  """`config.loss = dict(kind="dpo", variant=..., beta=..., ...)`; the data is a directory of
  tokenized pairs (`data.path`, from `distil-jax prepare-pairs`) and, unless `online_reference`
  or the variant is SimPO, the reference log-probs computed for them (`reference_logprobs`)."""

  kind: str = "dpo"
  variant: str = "sigmoid"  # sigmoid | ipo | length_normalised | simpo
  beta: float = 0.1
  label_smoothing: float = 0.0
  gamma: float = 0.0  # SimPO's margin
  sft_weight: float = 0.0  # RPO's alpha on the chosen answer's NLL per token
  reference_logprobs: str = ""  # a directory written by `distil-jax ref-logprobs`
  online_reference: bool = False  # read the frozen model "reference" (config.frozen.reference)

  def __post_init__(self):
    if self.variant not in KINDS:
      raise ValueError(f"config.loss.variant={self.variant!r}: choose from {KINDS}")
    self.objective()  # validates beta, label smoothing, gamma now, at config time
    if self.objective().needs_reference and not (self.online_reference or self.reference_logprobs):
      raise ValueError(
          "config.loss: DPO needs a reference: set loss.reference_logprobs to a "
          "`distil-jax ref-logprobs` directory, or loss.online_reference=True and "
          "frozen.reference.path"
      )

  def objective(self) -> DPOObjective:
    return DPOObjective(
        kind=self.variant,
        beta=self.beta,
        label_smoothing=self.label_smoothing,
        gamma=self.gamma,
        sft_weight=self.sft_weight,
    )

  def build(self, train_cfg) -> DPOLoss:
    return DPOLoss(
        objective=self.objective(),
        online_reference=self.online_reference,
        chunk=train_cfg.loss_chunk,
        logits_dtype=train_cfg.loss_logits_dtype,
        positions=train_cfg.loss_positions,
    )

  def batches(self, train_cfg, *, shard_index: int, shard_count: int):
    """This process's pair batches (the train command's data for `kind="dpo"`)."""
    from distil_jax.pairs.pipeline import make_pair_iterator

    precomputed = self.objective().needs_reference and not self.online_reference
    reference = self.reference_logprobs if precomputed else None
    data = train_cfg.data
    return make_pair_iterator(
        data.path,
        reference,
        seq_len=data.seq_len,
        batch_size=data.batch_size // shard_count,
        seed=data.seed,
        shard_index=shard_index,
        shard_count=shard_count,
        num_epochs=data.num_epochs or None,
    )
