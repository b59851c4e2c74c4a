"""Losses: pure functions `loss_fn(model, batch, rng) -> (loss_sum, aux)`.

A loss returns the *sum* over its counted tokens and `aux["tokens"]`, the count; the train
step adds both over micro-batches and divides once. Everything is float32 from the logits on.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


def _pad_to_chunks(x, chunk: int, axis: int = 1):
  pad = (-x.shape[axis]) % chunk
  if not pad:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths)


def chunked_cross_entropy(h_BxLxD: jax.Array, w_DxV: jax.Array, targets_BxL: jax.Array,
                          mask_BxL: jax.Array, *, chunk: int) -> tuple[jax.Array, jax.Array]:
  """Sum of masked token cross-entropies, and the number of correct argmax predictions.

  Scans over the sequence in chunks of `chunk` positions: each chunk computes its
  [B, chunk, V] logits, a float32 logsumexp, and is rematerialised in the backward pass, so
  the [B, L, V] logits never exist at once.
  """
  B, L, D = h_BxLxD.shape
  chunk = min(chunk, L)
  h = _pad_to_chunks(h_BxLxD, chunk)
  t = _pad_to_chunks(targets_BxL, chunk)
  m = _pad_to_chunks(mask_BxL.astype(jnp.float32), chunk)
  n = h.shape[1] // chunk
  # [n, B, chunk, ...]: scan over the leading chunk axis.
  h_NxBxCxD = h.reshape(B, n, chunk, D).swapaxes(0, 1)
  t_NxBxC = t.reshape(B, n, chunk).swapaxes(0, 1)
  m_NxBxC = m.reshape(B, n, chunk).swapaxes(0, 1)
  w = w_DxV.astype(h_BxLxD.dtype)

  @jax.checkpoint
  def one_chunk(carry, xs):
    h_BxCxD, t_BxC, m_BxC = xs
    logits_BxCxV = jnp.einsum("bcd,dv->bcv", h_BxCxD, w, preferred_element_type=jnp.float32)
    lse_BxC = jax.nn.logsumexp(logits_BxCxV, axis=-1)
    target_BxC = jnp.take_along_axis(logits_BxCxV, t_BxC[..., None], axis=-1)[..., 0]
    loss = jnp.sum((lse_BxC - target_BxC) * m_BxC)
    correct = jnp.sum((jnp.argmax(logits_BxCxV, axis=-1) == t_BxC) * m_BxC)
    loss_sum, correct_sum = carry
    return (loss_sum + loss, correct_sum + correct), None

  zero = jnp.zeros((), jnp.float32)
  (loss_sum, correct), _ = jax.lax.scan(one_chunk, (zero, zero), (h_NxBxCxD, t_NxBxC, m_NxBxC))
  return loss_sum, correct


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

  def __call__(self, model, batch: dict[str, jax.Array], rng: jax.Array):
    del rng  # deterministic
    h_BxLxD, _ = model.hidden_states(batch["input_ids"], batch["positions"],
                                     batch["segment_ids"])
    loss_sum, correct = chunked_cross_entropy(
        h_BxLxD, model.unembed_matrix(), batch["target_ids"], batch["loss_mask"],
        chunk=self.chunk)
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
