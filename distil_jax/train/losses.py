"""Losses: pure functions `loss_fn(model, batch, rng) -> (loss_sum, aux)`.

A loss returns the *sum* over its counted tokens and `aux["tokens"]`, the count; the train
step adds both over micro-batches and divides once. Everything is float32 from the logits on.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from distil_jax.sharding import constrain


def _pad_to_chunks(x, chunk: int, axis: int = 1):
  pad = (-x.shape[axis]) % chunk
  if not pad:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths)


def _chunks(h_BxLxD, targets_BxL, mask_BxL, chunk: int):
  """[n, B, chunk, ...] views for a scan over the sequence; the ragged tail is padded with
  masked-out positions."""
  B, L, D = h_BxLxD.shape
  h = _pad_to_chunks(h_BxLxD, chunk)
  t = _pad_to_chunks(targets_BxL, chunk)
  m = _pad_to_chunks(mask_BxL.astype(jnp.float32), chunk)
  n = h.shape[1] // chunk
  return (h.reshape(B, n, chunk, D).swapaxes(0, 1), t.reshape(B, n, chunk).swapaxes(0, 1),
          m.reshape(B, n, chunk).swapaxes(0, 1))


def _chunk_logits(h_BxCxD, w_DxV, logits_dtype):
  """[B, C, V] in `logits_dtype`, always handed on as float32 (a fused convert, no copy)."""
  return jnp.einsum("bcd,dv->bcv", h_BxCxD, w_DxV,
                    preferred_element_type=logits_dtype).astype(jnp.float32)


def _chunk_loss(logits_BxCxV, lse_BxC, t_BxC, m_BxC):
  target_BxC = jnp.take_along_axis(logits_BxCxV, t_BxC[..., None], axis=-1)[..., 0]
  loss = jnp.sum((lse_BxC - target_BxC) * m_BxC)
  correct = jnp.sum((jnp.argmax(logits_BxCxV, axis=-1) == t_BxC) * m_BxC)
  return loss, correct


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _fused_cross_entropy(h_BxLxD, w_DxV, targets_BxL, mask_BxL, chunk, logits_dtype):
  """Loss only (no gradient wanted): one chunk of logits at a time."""
  def one_chunk(carry, xs):
    h_BxCxD, t_BxC, m_BxC = xs
    logits = _chunk_logits(h_BxCxD, w_DxV, logits_dtype)
    loss, correct = _chunk_loss(logits, jax.nn.logsumexp(logits, axis=-1), t_BxC, m_BxC)
    return (carry[0] + loss, carry[1] + correct), None

  zero = jnp.zeros((), jnp.float32)
  (loss_sum, correct), _ = jax.lax.scan(one_chunk, (zero, zero),
                                        _chunks(h_BxLxD, targets_BxL, mask_BxL, chunk))
  return loss_sum, correct


def _fused_cross_entropy_fwd(h_BxLxD, w_DxV, targets_BxL, mask_BxL, chunk, logits_dtype):
  """Loss and both gradients in one pass over the chunks. The gradient of the summed loss
  with respect to a chunk's logits is softmax - onehot(target), masked; it is cast to the
  compute dtype and pushed through the two matmuls at once, so the logits are computed once
  (no rematerialisation) and all three LM-head matmuls run in the compute dtype."""
  B, L, D = h_BxLxD.shape

  def one_chunk(carry, xs):
    loss_sum, correct_sum, dw_DxV = carry
    h_BxCxD, t_BxC, m_BxC = xs
    logits = _chunk_logits(h_BxCxD, w_DxV, logits_dtype)
    lse_BxC = jax.nn.logsumexp(logits, axis=-1)
    loss, correct = _chunk_loss(logits, lse_BxC, t_BxC, m_BxC)
    probs = jnp.exp(logits - lse_BxC[..., None])
    onehot = jax.nn.one_hot(t_BxC, logits.shape[-1], dtype=jnp.float32)
    dlogits_BxCxV = ((probs - onehot) * m_BxC[..., None]).astype(h_BxCxD.dtype)
    dh_BxCxD = jnp.einsum("bcv,dv->bcd", dlogits_BxCxV, w_DxV,
                          preferred_element_type=jnp.float32).astype(h_BxCxD.dtype)
    dw_DxV = constrain(dw_DxV + jnp.einsum("bcd,bcv->dv", h_BxCxD, dlogits_BxCxV,
                                           preferred_element_type=jnp.float32),
                       ("embed", "vocab"))
    return (loss_sum + loss, correct_sum + correct, dw_DxV), dh_BxCxD

  zero = jnp.zeros((), jnp.float32)
  dw0 = constrain(jnp.zeros(w_DxV.shape, jnp.float32), ("embed", "vocab"))  # laid out as w
  (loss_sum, correct, dw_DxV), dh_NxBxCxD = jax.lax.scan(
      one_chunk, (zero, zero, dw0), _chunks(h_BxLxD, targets_BxL, mask_BxL, chunk))
  dh_BxLxD = dh_NxBxCxD.swapaxes(0, 1).reshape(B, -1, D)[:, :L]
  return (loss_sum, correct), (dh_BxLxD, dw_DxV.astype(w_DxV.dtype))


def _fused_cross_entropy_bwd(chunk, logits_dtype, residuals, cotangents):
  del chunk, logits_dtype
  dh_BxLxD, dw_DxV = residuals
  g = cotangents[0]  # the loss sum's; `correct` is a count and carries no gradient
  return ((g * dh_BxLxD).astype(dh_BxLxD.dtype), (g * dw_DxV).astype(dw_DxV.dtype), None,
          None)


_fused_cross_entropy.defvjp(_fused_cross_entropy_fwd, _fused_cross_entropy_bwd)


def chunked_cross_entropy(h_BxLxD: jax.Array, w_DxV: jax.Array, targets_BxL: jax.Array,
                          mask_BxL: jax.Array, *, chunk: int, logits_dtype=jnp.float32
                          ) -> tuple[jax.Array, jax.Array]:
  """Sum of masked token cross-entropies, and the number of correct argmax predictions.

  Scans over the sequence in chunks of `chunk` positions, so the [B, L, V] logits never exist
  at once: each chunk computes its [B, chunk, V] logits and a float32 logsumexp. Under
  differentiation the same pass also produces the gradients (see `_fused_cross_entropy_fwd`):
  3 LM-head matmuls per token, as for the naive loss, instead of 4 with rematerialisation.
  The weight is cast to the hidden states' (compute) dtype; gradients flow back through it.
  """
  chunk = min(chunk, h_BxLxD.shape[1])
  return _fused_cross_entropy(h_BxLxD, w_DxV.astype(h_BxLxD.dtype), targets_BxL,
                              mask_BxL.astype(jnp.float32), chunk, jnp.dtype(logits_dtype))


def naive_cross_entropy(logits_BxLxV: jax.Array, targets_BxL: jax.Array, mask_BxL: jax.Array
                        ) -> tuple[jax.Array, jax.Array]:
  """The reference: full float32 logits, log-softmax, masked sum."""
  logits = logits_BxLxV.astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, targets_BxL[..., None], axis=-1)[..., 0]
  mask = mask_BxL.astype(jnp.float32)
  correct = jnp.sum((jnp.argmax(logits, axis=-1) == targets_BxL) * mask)
  return jnp.sum(nll * mask), correct


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTLoss:
  """Next-token cross-entropy on the tokens `loss_mask` marks (assistant turns)."""
  chunk: int = 512
  logits_dtype: Any = jnp.float32  # the LM head's output; the softmax is float32 regardless

  def __call__(self, model, batch: dict[str, jax.Array], rng: jax.Array):
    del rng  # deterministic
    h_BxLxD, _ = model.hidden_states(batch["input_ids"], batch["positions"],
                                     batch.get("segment_ids"))  # absent: one document a row
    loss_sum, correct = chunked_cross_entropy(
        h_BxLxD, model.unembed_matrix(), batch["target_ids"], batch["loss_mask"],
        chunk=self.chunk, logits_dtype=self.logits_dtype)
    tokens = jnp.sum(batch["loss_mask"].astype(jnp.float32))
    return loss_sum, {"tokens": tokens, "correct": correct}


@dataclasses.dataclass(frozen=True, kw_only=True)
class NaiveSFTLoss:
  """SFTLoss through the full logits; the reference the chunked loss is tested against."""

  def __call__(self, model, batch: dict[str, jax.Array], rng: jax.Array):
    del rng
    logits = model(batch["input_ids"], batch["positions"], batch["segment_ids"])
    loss_sum, correct = naive_cross_entropy(logits, batch["target_ids"], batch["loss_mask"])
    tokens = jnp.sum(batch["loss_mask"].astype(jnp.float32))
    return loss_sum, {"tokens": tokens, "correct": correct}
