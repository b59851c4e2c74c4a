"""Knowledge distillation: a teacher's logits and hidden states in the student's train step.

    objective = (1/N) sum_t m_t [ k_t ((1 - alpha(s)) CE_t + alpha(s) KD_t) + (1 - k_t) CE_t ]
                +  w_f * sum_l f_l(s) F_l / (n N)

over the N = sum_t m_t tokens `loss_mask` (m) counts (the whole batch, all micro-batches), at
optimizer step s. k_t is `kd_mask` (offline source only, else 1): 1 where the teacher has a
distribution at t, 0 where it has none (a partial store: a chat API scores no `<|im_end|>`), so
an unscored position trains on its hard label at full weight; with k = 1 everywhere this is
`(1 - alpha) CE / N + alpha KD / N`.
- CE_t = -log q(y_t), the SFT cross-entropy on the full student vocabulary;
- KD_t = T(s)^2 D(p_t || q_t): the divergence (`divergences.Divergence`: forward KL, reverse
  KL, JSD(beta)) between the teacher's and the student's distributions at the same position,
  both softened by T(s), over the vocabulary columns they share (`vocab_columns`). The teacher
  is either in the step (`source=online`: its hidden states, then its logits chunk by chunk
  beside the student's, optionally cut to its top-k) or read from the offline store
  (`source=offline`: `topk_ids`, `topk_logprobs`, `topk_tail`, `kd_mask` batch fields); the mass
  outside a top-k is treated as `tail` says (`divergences.TailTreatment`, formulas there);
- F_l = sum_t dist(P_l h^s_{a_l,t}, h^t_{b_l,t}): progressive hidden-state fusion over the n
  mapped layer pairs (a_l student layer, b_l teacher layer), P_l a learned projection from the
  student width to the teacher's (training-only: it lives in `TrainState.extra`, is
  checkpointed, never exported), dist the cosine distance or the MSE of RMS-normalised states,
  f_l(s) in [0, 1] the progressive schedule (the top pair enters first, see
  `kd_schedules.fusion_layer_weights`), w_f the fusion weight.
The reported metrics: `ce` = sum_t m_t CE_t / N; `kd` = sum_t m_t k_t KD_t / N_kd over its own
count `kd_tokens` N_kd = sum_t m_t k_t (= N online and for complete stores, so `kd` is the mean
divergence over the positions that have a teacher, whatever the source).
alpha(s) and T(s) follow constant (the start value throughout) / linear / cosine ramps from
their start value at step 0 to their `_end` value at the last step. No [B, L, V] tensor of either model
exists: the logits are formed chunk by chunk (`chunked.chunked_token_loss`), the gradient with
respect to the student's in the same pass.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from distil_jax.train import divergences as dv
from distil_jax.train import kd_schedules as sched
from distil_jax.train.chunked import chunk_logits, chunked_token_loss
from distil_jax.train.loss_config import register
from distil_jax.train.losses import token_correct, token_cross_entropy
from distil_jax.train.objective import (
    TOKEN_FIELDS,
    FieldSpec,
    LossContext,
    per_token,
    response_tokens,
)

TEACHER = "teacher"


class Source(enum.Enum):
  ONLINE = "online"  # the frozen teacher runs inside the step
  OFFLINE = "offline"  # top-k from `distil-jax teacher-logits`, joined into the batch


class FusionDistance(enum.Enum):
  COSINE = "cosine"
  RMS_MSE = "rms_mse"


OFFLINE_FIELDS = {
    "topk_ids": FieldSpec(jnp.int32, ("batch", "seq", None)),
    "topk_logprobs": FieldSpec(jnp.float32, ("batch", "seq", None)),
    "topk_tail": FieldSpec(jnp.float32, ("batch", "seq")),
    # 1 where the store has the position (the join fills it: equal to loss_mask > 0 for a
    # complete store, 0 at the unscored `<|im_end|>` of a partial one).
    "kd_mask": FieldSpec(jnp.float32, ("batch", "seq")),
}


class FusionProjections(nnx.Module):
  """One learned [student width, teacher width] projection per mapped layer pair."""

  def __init__(self, pairs: int, student_width: int, teacher_width: int, *, rngs: nnx.Rngs):
    scale = student_width**-0.5
    self.proj = nnx.Param(
        scale
        * jax.random.normal(rngs.params(), (pairs, student_width, teacher_width), jnp.float32),
        axes=("layers", "embed", None),
    )


@dataclasses.dataclass(frozen=True)
class _KDChunk:
  """The per-chunk token loss (static: hashable), reading alpha, T and the teacher's unembedding
  from `consts`."""

  source: Source
  divergence: dv.Divergence
  tail: dv.TailTreatment
  beta: float
  columns: int
  online_top_k: int
  temperature: float | None  # static when it never changes (IGNORE needs a Python 1.0)

  def _teacher_sparse(self, teacher_logits):
    _, ids = jax.lax.top_k(teacher_logits, self.online_top_k)
    logp, tail = dv.student_topk_logprobs(teacher_logits, ids)
    if tail is None:
      tail = jnp.full(logp.shape[:-1], -jnp.inf)
    return ids, logp, tail

  def __call__(self, logits_BxCxV, inputs, consts):
    m, targets = inputs["mask"], inputs["targets"]
    temperature = self.temperature if self.temperature is not None else consts["temperature"]
    ce = token_cross_entropy(logits_BxCxV, targets)
    student = logits_BxCxV[..., : self.columns]
    if self.source is Source.ONLINE:
      teacher = chunk_logits(inputs["teacher_h"], consts["teacher_w"], jnp.float32)
      teacher = teacher[..., : self.columns]
      if self.online_top_k:
        sparse = self._teacher_sparse(teacher)
      else:
        sparse = None
        kd = dv.dense_divergence(
            student, teacher, kind=self.divergence, temperature=temperature, beta=self.beta
        )
    else:
      sparse = inputs["topk_ids"], inputs["topk_logprobs"], inputs["topk_tail"]
    if sparse is not None:
      kd = dv.sparse_divergence(
          student,
          *sparse,
          kind=self.divergence,
          tail=self.tail,
          temperature=temperature,
          beta=self.beta,
      )
    k = inputs["kd_mask"] if self.source is Source.OFFLINE else jnp.ones_like(m)
    # A masked or unscored position may hold anything (padding, zeros for top-k): never let it
    # reach the sum.
    kd = jnp.where(m * k > 0, kd, 0.0)
    alpha = consts["alpha"]
    loss = jnp.sum(m * ((1.0 - alpha * k) * ce + alpha * k * kd))
    return loss, {
        "ce": jnp.sum(m * ce),
        "kd": jnp.sum(m * k * kd),
        "accuracy": jnp.sum(m * token_correct(logits_BxCxV, targets)),
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class KDSettings:
  """What a config file chooses about KD (`config.loss`, kind "kd"); `KDLoss` adds what the run
  sets."""

  source: Source = Source.ONLINE
  divergence: dv.Divergence = dv.Divergence.FORWARD_KL
  jsd_beta: float = 0.5
  tail: dv.TailTreatment = dv.TailTreatment.IGNORE
  online_top_k: int = 0  # online only: cut the teacher to its top-k (0: the whole vocabulary)
  alpha: float = 0.5
  alpha_end: float = 0.5
  alpha_ramp: sched.Ramp = sched.Ramp.CONSTANT
  temperature: float = 1.0
  temperature_end: float = 1.0
  temperature_ramp: sched.Ramp = sched.Ramp.CONSTANT
  vocab_columns: int = 0  # 0: the rows both models have
  fusion_weight: float = 0.0  # 0: no hidden-state fusion
  fusion_distance: FusionDistance = FusionDistance.COSINE
  fusion_ramp: sched.Ramp = sched.Ramp.LINEAR
  fusion_pairs: int = 0  # 0: one per student layer
  fusion_enter_fraction: float = 0.5


@dataclasses.dataclass(frozen=True, kw_only=True)
class KDLoss(KDSettings):
  """The objective of the module docstring."""

  total_steps: int = 1
  chunk: int = 512
  logits_dtype: Any = jnp.float32
  positions: int = 0  # >0: both LM heads only at each row's first K trained positions
  normalisers = {
      "ce": "tokens",
      "kd": "kd_tokens",
      "accuracy": "tokens",
      "fusion": "layer_tokens",
  }

  @property
  def frozen_models(self) -> tuple[str, ...]:
    needs_teacher = self.source is Source.ONLINE or self.fusion_weight > 0
    return (TEACHER,) if needs_teacher else ()

  def fields(self):
    fields = dict(TOKEN_FIELDS)
    if self.source is Source.OFFLINE:
      fields.update(OFFLINE_FIELDS)
    return fields

  def layer_pairs(self, student_layers: int, teacher_layers: int) -> tuple[tuple[int, int], ...]:
    return sched.uniform_layer_map(student_layers, teacher_layers, self.fusion_pairs or None)

  def counts(self, batch, step):
    del step
    tokens = response_tokens(batch)
    counts = {"tokens": tokens, "kd_tokens": tokens}
    if self.source is Source.OFFLINE:
      counts["kd_tokens"] = jnp.sum(batch["loss_mask"].astype(jnp.float32) * batch["kd_mask"])
    if self.fusion_weight > 0:
      counts["layer_tokens"] = tokens * self._pairs_count
    return counts

  @property
  def _pairs_count(self) -> int:
    if not self.fusion_pairs:
      raise ValueError("fusion_pairs must be known before counting: call bind() first")
    return self.fusion_pairs

  def bind(self, student_cfg, frozen_cfgs) -> "KDLoss":
    """This loss with what depends on the models' shapes settled: the number of fusion pairs
    (the student's depth by default), checked against the teacher's depth."""
    if self.fusion_weight <= 0:
      return self
    teacher = frozen_cfgs[TEACHER]
    pairs = self.layer_pairs(student_cfg.num_layers, teacher.num_layers)
    return dataclasses.replace(self, fusion_pairs=len(pairs))

  def extra_module(self, student_cfg, frozen_cfgs, seed: int):
    """A zero-argument builder of the fusion projections, or None without fusion."""
    if self.fusion_weight <= 0:
      return None
    teacher = frozen_cfgs[TEACHER]
    pairs = len(self.layer_pairs(student_cfg.num_layers, teacher.num_layers))
    return lambda: FusionProjections(
        pairs, student_cfg.hidden_size, teacher.hidden_size, rngs=nnx.Rngs(seed + 1)
    )

  def _scheduled(self, kind, start, end, step):
    """`start` throughout for a constant ramp (its `_end` is then unused), else the ramp."""
    if kind is sched.Ramp.CONSTANT:
      return jnp.float32(start)
    return sched.ramp(kind, start, end, step, self.total_steps)

  def _chunk_fn(self, columns: int) -> _KDChunk:
    constant_t = (
        self.temperature_ramp is sched.Ramp.CONSTANT or self.temperature == self.temperature_end
    )
    return _KDChunk(
        source=self.source,
        divergence=self.divergence,
        tail=self.tail,
        beta=float(self.jsd_beta),
        columns=columns,
        online_top_k=self.online_top_k,
        temperature=float(self.temperature) if constant_t else None,
    )

  def _columns(self, model, teacher) -> int:
    rows = [model.cfg.vocab_size] + ([teacher.cfg.vocab_size] if teacher is not None else [])
    if self.vocab_columns:
      return dv.aligned_vocab(model.cfg.vocab_size, max(rows), self.vocab_columns)
    return min(rows)

  def __call__(self, ctx: LossContext, batch, counts):
    model, teacher = ctx.model, ctx.frozen.get(TEACHER)
    fusion = self.fusion_weight > 0
    pairs = self.layer_pairs(model.cfg.num_layers, teacher.cfg.num_layers) if fusion else ()
    args = (batch["input_ids"], batch["positions"], batch.get("segment_ids"))
    h_BxLxD, student_layers = model.hidden_states(
        *args, collect=tuple(a for a, _ in pairs) if fusion else False
    )
    inputs = {"targets": batch["target_ids"], "mask": batch["loss_mask"].astype(jnp.float32)}
    consts = {"alpha": self._scheduled(self.alpha_ramp, self.alpha, self.alpha_end, ctx.step)}
    if self._chunk_fn(1).temperature is None:
      consts["temperature"] = self._scheduled(
          self.temperature_ramp, self.temperature, self.temperature_end, ctx.step
      )
    if teacher is not None:
      teacher_h, teacher_layers = teacher.hidden_states(
          *args, collect=tuple(b for _, b in pairs) if fusion else False
      )
      if self.source is Source.ONLINE:
        inputs["teacher_h"] = teacher_h
        consts["teacher_w"] = teacher.unembed_matrix().astype(teacher_h.dtype)
    if self.source is Source.OFFLINE:
      inputs.update({k: batch[k] for k in OFFLINE_FIELDS})
    total, sums = chunked_token_loss(
        h_BxLxD,
        model.unembed_matrix(),
        inputs,
        self._chunk_fn(self._columns(model, teacher)),
        chunk=self.chunk,
        consts=consts,
        logits_dtype=self.logits_dtype,
        positions=self.positions,
    )
    objective = per_token(total, counts["tokens"])
    if fusion:
      fused, weighted = self._fusion(ctx, student_layers, teacher_layers, inputs["mask"])
      sums["fusion"] = fused
      objective = objective + self.fusion_weight * per_token(weighted, counts["layer_tokens"])
    return objective, sums

  def _fusion(self, ctx, student_NxBxLxD, teacher_NxBxLxE, mask_BxL):
    """(sum of distances over pairs and counted tokens, the same weighted by the schedule)."""
    proj_NxDxE = ctx.extra.proj[...].astype(jnp.float32)
    projected = jnp.einsum("nbld,nde->nble", student_NxBxLxD.astype(jnp.float32), proj_NxDxE)
    teacher = teacher_NxBxLxE.astype(jnp.float32)
    if self.fusion_distance is FusionDistance.COSINE:
      dist_NxBxL = dv.cosine_distance(projected, teacher)
    else:
      dist_NxBxL = dv.rms_normalised_mse(projected, teacher)
    per_pair_N = jnp.sum(dist_NxBxL * mask_BxL[None], axis=(1, 2))
    weights_N = sched.fusion_layer_weights(
        per_pair_N.shape[0],
        ctx.step,
        self.total_steps,
        self.fusion_ramp,
        1.0,
        enter_fraction=self.fusion_enter_fraction,
    )
    return jnp.sum(per_pair_N), jnp.sum(weights_N * per_pair_N)


@register("kd")
@dataclasses.dataclass(frozen=True, kw_only=True)
class KDConfig(KDSettings):
  """`config.loss` for kind "kd": the `KDSettings`; `build` adds what the run sets."""

  kind: str = "kd"

  def build(self, train_cfg) -> KDLoss:
    fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "kind"}
    return KDLoss(
        total_steps=train_cfg.steps,
        chunk=train_cfg.loss_chunk,
        logits_dtype=train_cfg.loss_logits_dtype,
        positions=train_cfg.loss_positions,
        **fields,
    )
