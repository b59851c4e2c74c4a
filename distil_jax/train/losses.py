"""Supervised fine-tuning losses, on the contract of `objective`.

    CE = (1/N) * sum_{t : m_t = 1} -log softmax(z_t)[y_t],   N = sum_t m_t over the whole batch

z_t the student's float32 logits at position t, y_t the next token, m_t the loss mask
(assistant tokens). Everything is float32 from the logits on.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from distil_jax.train.chunked import chunked_token_loss
from distil_jax.train.objective import TOKEN_FIELDS, LossContext, per_token, response_tokens


def token_cross_entropy(logits_BxCxV, targets_BxC):
  """-log softmax(logits)[target] per position, float32 [B, C]."""
  lse = jax.nn.logsumexp(logits_BxCxV, axis=-1)
  target = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
  return lse - target


def token_correct(logits_BxCxV, targets_BxC):
  return (jnp.argmax(logits_BxCxV, axis=-1) == targets_BxC).astype(jnp.float32)


def _cross_entropy_chunk(logits_BxCxV, inputs, consts):
  del consts
  m = inputs["mask"]
  loss = jnp.sum(token_cross_entropy(logits_BxCxV, inputs["targets"]) * m)
  return loss, {"correct": jnp.sum(token_correct(logits_BxCxV, inputs["targets"]) * m)}


def chunked_cross_entropy(
    h_BxLxD: jax.Array,
    w_DxV: jax.Array,
    targets_BxL: jax.Array,
    mask_BxL: jax.Array,
    *,
    chunk: int,
    logits_dtype=jnp.float32,
    positions: int = 0,
) -> tuple[jax.Array, jax.Array]:
  """Sum of masked token cross-entropies, and the number of correct argmax predictions.

  One [B, chunk, V] block of logits at a time (`chunked.chunked_token_loss`): 3 LM-head matmuls
  per token under differentiation, as for the naive loss, all in the compute dtype.
  `positions = K > 0`: the LM head runs only at each row's first K masked positions.
  """
  inputs = {"targets": targets_BxL, "mask": mask_BxL.astype(jnp.float32)}
  loss, aux = chunked_token_loss(
      h_BxLxD,
      w_DxV,
      inputs,
      _cross_entropy_chunk,
      chunk=chunk,
      logits_dtype=logits_dtype,
      positions=positions,
  )
  return loss, aux["correct"]


def naive_cross_entropy(
    logits_BxLxV: jax.Array, targets_BxL: jax.Array, mask_BxL: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """The reference: full float32 logits, log-softmax, masked sum."""
  logits = logits_BxLxV.astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, targets_BxL[..., None], axis=-1)[..., 0]
  mask = mask_BxL.astype(jnp.float32)
  correct = jnp.sum((jnp.argmax(logits, axis=-1) == targets_BxL) * mask)
  return jnp.sum(nll * mask), correct


class _TokenLoss:
  """Shared declarations of losses normalised by response tokens."""

  frozen_models: tuple[str, ...] = ()
  normalisers = {"ce": "tokens", "accuracy": "tokens"}
  packed = True

  def fields(self):
    fields = dict(TOKEN_FIELDS)
    if not self.packed:  # one document a row: no segment ids
      del fields["segment_ids"]
    return fields

  def counts(self, batch, step):
    del step
    return {"tokens": response_tokens(batch)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTLoss(_TokenLoss):
  """Next-token cross-entropy on the tokens `loss_mask` marks (assistant turns): CE above."""

  chunk: int = 512
  logits_dtype: Any = jnp.float32  # the LM head's output; the softmax is float32 regardless
  packed: bool = True  # rows hold several documents apart by segment_ids
  positions: int = 0  # >0: the LM head only at each row's first K trained positions

  def __call__(self, ctx: LossContext, batch, counts):
    model = ctx.model
    h_BxLxD, _ = model.hidden_states(
        batch["input_ids"], batch["positions"], batch.get("segment_ids")
    )  # absent: one document a row
    ce_sum, correct = chunked_cross_entropy(
        h_BxLxD,
        model.unembed_matrix(),
        batch["target_ids"],
        batch["loss_mask"],
        chunk=self.chunk,
        logits_dtype=self.logits_dtype,
        positions=self.positions,
    )
    return per_token(ce_sum, counts["tokens"]), {"ce": ce_sum, "accuracy": correct}


@dataclasses.dataclass(frozen=True, kw_only=True)
class NaiveSFTLoss(_TokenLoss):
  """SFTLoss through the full logits; the reference the chunked loss is tested against."""

  def __call__(self, ctx: LossContext, batch, counts):
    logits = ctx.model(batch["input_ids"], batch["positions"], batch["segment_ids"])
    ce_sum, correct = naive_cross_entropy(logits, batch["target_ids"], batch["loss_mask"])
    return per_token(ce_sum, counts["tokens"]), {"ce": ce_sum, "accuracy": correct}
