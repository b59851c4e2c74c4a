"""Per-sequence sums of token log-probabilities, chunked over the sequence: [B, L, V] never exists.

    logp_B[b] = sum_t mask[b, t] * log softmax(h[b, t] @ W)[target[b, t]]

The DPO loss is nonlinear in each sequence's sum, so the gradient of a chunk's logits is only
known once every chunk of the sequence has been summed: unlike the fused cross-entropy
(`losses.chunked_cross_entropy`, 3 LM-head matmuls a token) it cannot be formed in the forward
pass. Each chunk's body is `jax.checkpoint`ed inside the scan instead, so only [B, C, D] hidden
chunks are kept and the chunk's [B, C, V] logits are recomputed in the backward pass:
4 LM-head matmuls a token under differentiation (forward, recompute, dh, dW), 1 without.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distil_jax.train import positions as pos


def _pad(x, chunk: int):
  pad = (-x.shape[1]) % chunk
  return x if not pad else jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))


def sequence_logprobs(
    h_BxLxD: jax.Array,
    w_DxV: jax.Array,
    targets_BxL: jax.Array,
    mask_BxL: jax.Array,
    *,
    chunk: int = 256,
    logits_dtype=jnp.float32,
    positions: int = 0,
) -> jax.Array:
  """[B] float32: each row's masked sum of target log-probabilities. `w_DxV` is cast to the
  hidden states' (compute) dtype; the log-softmax is float32 whatever `logits_dtype`.
  `positions = K > 0`: the LM head only at each row's first K masked positions
  (`positions.gather`; no row may have more)."""
  inputs = {"t": targets_BxL, "m": mask_BxL.astype(jnp.float32)}
  h_BxLxD, inputs = pos.gather(h_BxLxD, inputs, "m", positions)
  targets_BxL, mask_BxL = inputs["t"], inputs["m"]
  B, L, D = h_BxLxD.shape
  chunk = min(chunk, L)
  w = w_DxV.astype(h_BxLxD.dtype)
  h = _pad(h_BxLxD, chunk)
  t = _pad(targets_BxL.astype(jnp.int32), chunk)
  m = _pad(mask_BxL.astype(jnp.float32), chunk)
  n = h.shape[1] // chunk
  xs = (
      h.reshape(B, n, chunk, D).swapaxes(0, 1),
      t.reshape(B, n, chunk).swapaxes(0, 1),
      m.reshape(B, n, chunk).swapaxes(0, 1),
  )

  @jax.checkpoint
  def chunk_logp(h_BxCxD, t_BxC, m_BxC, w_DxV):
    logits = jnp.einsum("bcd,dv->bcv", h_BxCxD, w_DxV, preferred_element_type=logits_dtype).astype(
        jnp.float32
    )
    target = jnp.take_along_axis(logits, t_BxC[..., None], axis=-1)[..., 0]
    return jnp.sum((target - jax.nn.logsumexp(logits, axis=-1)) * m_BxC, axis=-1)

  def body(total_B, x):
    return total_B + chunk_logp(*x, w), None

  total_B, _ = jax.lax.scan(body, jnp.zeros((B,), jnp.float32), xs)
  return total_B


def naive_sequence_logprobs(logits_BxLxV, targets_BxL, mask_BxL) -> jax.Array:
  """The reference: full float32 log-softmax, masked row sums."""
  logp = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
  target = jnp.take_along_axis(logp, targets_BxL[..., None], axis=-1)[..., 0]
  return jnp.sum(target * mask_BxL.astype(jnp.float32), axis=-1)
