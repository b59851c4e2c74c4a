"""Rotary embeddings and grouped-query attention kernels (XLA and cuDNN).

Shapes: B batch, T query length, S key length, N query heads, K kv heads,
G = N // K query heads per kv head, H head dim.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from distil_jax.model.config import AttentionImpl

_NEG_INF = -0.7 * float(jnp.finfo(jnp.float32).max)


def rope(x_BxTxNxH: jax.Array, positions_BxT: jax.Array, theta: float) -> jax.Array:
  """Rotate-half RoPE as Qwen2/HF compute it: angles in float32, then cast back."""
  h = x_BxTxNxH.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
  angles_BxTxH2 = positions_BxT.astype(jnp.float32)[..., None] * inv_freq
  angles_BxTxH = jnp.concatenate([angles_BxTxH2, angles_BxTxH2], axis=-1)
  cos = jnp.cos(angles_BxTxH)[:, :, None, :].astype(x_BxTxNxH.dtype)
  sin = jnp.sin(angles_BxTxH)[:, :, None, :].astype(x_BxTxNxH.dtype)
  x1, x2 = jnp.split(x_BxTxNxH, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return x_BxTxNxH * cos + rotated * sin


def segment_causal_mask(q_positions_BxT, q_segments_BxT, k_positions_BxS,
                        k_segments_BxS) -> jax.Array:
  """[B, T, S] bool: same non-padding segment and key position <= query position."""
  same_segment = q_segments_BxT[:, :, None] == k_segments_BxS[:, None, :]
  not_padding = k_segments_BxS[:, None, :] != 0
  causal = k_positions_BxS[:, None, :] <= q_positions_BxT[:, :, None]
  return same_segment & not_padding & causal


def attend_xla(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxTxS) -> jax.Array:
  """Reference GQA attention; softmax in float32. Rows with no visible key output 0."""
  b, t, n, h = q_BxTxNxH.shape
  k = k_BxSxKxH.shape[2]
  q_BxTxKxGxH = q_BxTxNxH.reshape(b, t, k, n // k, h)
  scores = jnp.einsum("btkgh,bskh->bkgts", q_BxTxKxGxH, k_BxSxKxH,
                      preferred_element_type=jnp.float32) * (h ** -0.5)
  scores = jnp.where(mask_BxTxS[:, None, None, :, :], scores, _NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1)
  probs = jnp.where(mask_BxTxS[:, None, None, :, :], probs, 0.0).astype(v_BxSxKxH.dtype)
  out = jnp.einsum("bkgts,bskh->btkgh", probs, v_BxSxKxH)
  return out.reshape(b, t, n, h)


def attend_cudnn(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segment_ids_BxT) -> jax.Array:
  """cuDNN flash attention (GPU only). Causal over the row; packed documents are kept
  apart with a boolean mask, which cuDNN applies as a bias."""
  mask = None
  if segment_ids_BxT is not None:
    same = segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :]
    mask = same[:, None, :, :]
  return jax.nn.dot_product_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, mask=mask,
                                      is_causal=True, implementation="cudnn")


def self_attention(impl: AttentionImpl, q, k, v, positions_BxT, segment_ids_BxT):
  """Training / full-sequence attention (no cache). Positions restart per document, so
  causality inside a packed row comes from the (segment, position) pair."""
  if impl is AttentionImpl.CUDNN:
    return attend_cudnn(q, k, v, segment_ids_BxT)
  if impl is AttentionImpl.SPLASH:
    from distil_jax.model.splash import attend_splash  # noqa: PLC0415 (Pallas import is slow)
    return attend_splash(q, k, v, segment_ids_BxT)
  mask = segment_causal_mask(positions_BxT, segment_ids_BxT, positions_BxT, segment_ids_BxT)
  return attend_xla(q, k, v, mask)
