"""Rotary embeddings and grouped-query attention kernels (XLA and cuDNN).

Shapes: B batch, T query length, S key length, N query heads, K kv heads,
G = N // K query heads per kv head, H head dim.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# The only JAX entry point to cuDNN's ragged (packed-document) attention; `jax.nn` imports it too.
from jax._src.cudnn import fused_attention_stablehlo as cudnn_attention

from distil_jax.model.config import AttentionImpl
from distil_jax.model.rope_scaling import YarnScaling
from distil_jax.sharding import constrain

_NEG_INF = -0.7 * float(jnp.finfo(jnp.float32).max)


def rope(
    x_BxTxNxH: jax.Array, positions_BxT: jax.Array, theta: float, scaling: YarnScaling | None = None
) -> jax.Array:
  """Rotate-half RoPE as Qwen2/HF compute it: angles in float32, then cast back. With YaRN
  `scaling`, its frequencies and its attention factor on cos and sin (rope_scaling.py)."""
  h = x_BxTxNxH.shape[-1]
  if scaling is None:
    inv_freq = 1.0 / (theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
  else:
    inv_freq = jnp.asarray(scaling.inv_freq(h, theta))
  angles_BxTxH2 = positions_BxT.astype(jnp.float32)[..., None] * inv_freq
  angles_BxTxH = jnp.concatenate([angles_BxTxH2, angles_BxTxH2], axis=-1)
  cos, sin = jnp.cos(angles_BxTxH), jnp.sin(angles_BxTxH)
  if scaling is not None:
    cos, sin = cos * scaling.attention_factor, sin * scaling.attention_factor
  cos = cos[:, :, None, :].astype(x_BxTxNxH.dtype)
  sin = sin[:, :, None, :].astype(x_BxTxNxH.dtype)
  x1, x2 = jnp.split(x_BxTxNxH, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return x_BxTxNxH * cos + rotated * sin


def segment_causal_mask(
    q_positions_BxT, q_segments_BxT, k_positions_BxS, k_segments_BxS
) -> jax.Array:
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
  scores = jnp.einsum(
      "btkgh,bskh->bkgts", q_BxTxKxGxH, k_BxSxKxH, preferred_element_type=jnp.float32
  ) * (h**-0.5)
  scores = jnp.where(mask_BxTxS[:, None, None, :, :], scores, _NEG_INF)
  probs = jax.nn.softmax(scores, axis=-1)
  probs = jnp.where(mask_BxTxS[:, None, None, :, :], probs, 0.0).astype(v_BxSxKxH.dtype)
  out = jnp.einsum("bkgts,bskh->btkgh", probs, v_BxSxKxH)
  return out.reshape(b, t, n, h)


class PackedLayout(NamedTuple):
  """Where each run of equal segment ids lies in its row, in the form cuDNN's ragged (THD)
  attention takes: M slots per row, unused slots -1."""

  seqlens_BxM: jax.Array  # int32 tokens in each run
  offsets_BxM1: jax.Array  # int32 first token of each run; the last column is always -1


def packed_layout(segment_ids_BxT: jax.Array, num_slots: int) -> PackedLayout:
  """Runs of equal segment ids (documents, and the trailing padding run) -> `num_slots` slots.

  Every token lies in exactly one slot, padding included, so cuDNN writes every row of its
  outputs and gradients (tokens outside every slot would be left as uninitialised memory).
  A row with more runs than slots merges the surplus runs into its last slot: their tokens
  then attend causally across those documents' boundaries. It is a bounded error, never
  garbage, and the data pipeline is what must prevent it (cap documents per row).
  """
  b = segment_ids_BxT.shape[0]
  changes_BxT = jnp.concatenate(
      [jnp.ones((b, 1), bool), segment_ids_BxT[:, 1:] != segment_ids_BxT[:, :-1]], axis=1
  )
  run_BxT = jnp.cumsum(changes_BxT, axis=1, dtype=jnp.int32) - 1
  slot_BxT = jnp.minimum(run_BxT, num_slots - 1)
  slots_M = jnp.arange(num_slots, dtype=jnp.int32)
  seqlens_BxM = jnp.sum(slot_BxT[:, :, None] == slots_M, axis=1, dtype=jnp.int32)
  offsets_BxM = jnp.cumsum(seqlens_BxM, axis=1, dtype=jnp.int32) - seqlens_BxM
  used_BxM = slots_M[None, :] <= run_BxT[:, -1:]
  unused = jnp.int32(-1)
  return PackedLayout(
      seqlens_BxM=jnp.where(used_BxM, seqlens_BxM, unused),
      offsets_BxM1=jnp.concatenate(
          [jnp.where(used_BxM, offsets_BxM, unused), jnp.full((b, 1), unused)], axis=1
      ),
  )


def attend_cudnn(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segment_ids_BxT) -> jax.Array:
  """cuDNN flash attention (GPU only), causal over the row. Packed documents are kept apart
  with a boolean mask, which cuDNN takes as a dense [B,1,T,T] bias (and returns its gradient)."""
  mask = None
  if segment_ids_BxT is not None:
    same = segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :]
    mask = same[:, None, :, :]
  return jax.nn.dot_product_attention(
      q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, mask=mask, is_causal=True, implementation="cudnn"
  )


def attend_cudnn_packed(
    q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segment_ids_BxT, max_documents: int
) -> jax.Array:
  """cuDNN flash attention over packed documents in its ragged layout (Hopper or later):
  causal within each run of `packed_layout`, no T*T mask or bias. `max_documents` per row,
  plus one slot for the trailing padding."""
  n, h = q_BxTxNxH.shape[2:]
  layout = packed_layout(segment_ids_BxT, max_documents + 1)
  seqlens = constrain(layout.seqlens_BxM, ("batch", None))
  offsets = constrain(layout.offsets_BxM1, ("batch", None))
  # jax (0.10) turns token offsets into element offsets with the *query* head count for keys
  # and values too, right only when key heads = query heads; so GQA keys and values are
  # repeated to the query heads here (the attention FLOPs are the same).
  # (This also gives q, k and v one sharding, which the kernel's partitioner requires.)
  group = n // k_BxTxKxH.shape[2]
  heads = ("batch", "seq", "act_heads", "head_dim")
  k = constrain(jnp.repeat(k_BxTxKxH, group, axis=2), heads)
  v = constrain(jnp.repeat(v_BxTxKxH, group, axis=2), heads)
  return cudnn_attention.dot_product_attention(
      q_BxTxNxH,
      k,
      v,
      q_seqlen=seqlens,
      kv_seqlen=seqlens,
      q_offsets=offsets,
      kv_offsets=offsets,
      scale=h**-0.5,
      mask_type=cudnn_attention.MaskType.PADDING_CAUSAL,
  )


def self_attention(
    impl: AttentionImpl,
    q,
    k,
    v,
    positions_BxT,
    segment_ids_BxT=None,
    *,
    max_segments_per_row: int = 0,
):
  """Training / full-sequence attention (no cache). Positions restart per document, so
  causality inside a packed row comes from the (segment, position) pair. Without segment
  ids the row is one document. On the XLA and cuDNN paths padding tokens (segment 0) output 0."""
  if impl is AttentionImpl.CUDNN:
    if segment_ids_BxT is None:
      return attend_cudnn(q, k, v, None)
    if max_segments_per_row:
      out = attend_cudnn_packed(q, k, v, segment_ids_BxT, max_segments_per_row)
    else:
      out = attend_cudnn(q, k, v, segment_ids_BxT)
    return jnp.where((segment_ids_BxT != 0)[:, :, None, None], out, jnp.zeros((), out.dtype))
  if segment_ids_BxT is None:
    segment_ids_BxT = jnp.ones(q.shape[:2], jnp.int32)
  if impl is AttentionImpl.SPLASH:
    from distil_jax.model.splash import attend_splash  # noqa: PLC0415 (Pallas import is slow)

    return attend_splash(q, k, v, segment_ids_BxT)
  mask = segment_causal_mask(positions_BxT, segment_ids_BxT, positions_BxT, segment_ids_BxT)
  return attend_xla(q, k, v, mask)
