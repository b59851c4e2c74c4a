"""Token losses through the LM head, chunk by chunk, gradient formed in the same pass.

`chunked_token_loss` scans the sequence in chunks of `chunk` positions: each chunk computes its
[B, chunk, V] logits (never the whole [B, L, V]), hands them in float32 to a per-chunk loss,
and, under differentiation, takes that loss's gradient with respect to the logits right there,
casts it to the compute dtype and pushes it through the two LM-head matmuls (dh and dW). So a
token loss of any kind (cross-entropy, a divergence from a teacher's logits or top-k, their
mix) costs three LM-head matmuls per token, all in the compute dtype, and no rematerialised
forward. This needs the loss to be a sum over tokens of a function of each token's logits,
which every token loss here is; DPO's per-sequence loss is not, and uses its own path.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from distil_jax.sharding import constrain
from distil_jax.train import positions as pos

# chunk_fn(logits_f32 [B, C, V], inputs chunk {key: [B, C, ...]}, consts) -> (loss_sum, aux_sums)
ChunkFn = Callable[[jax.Array, dict, Any], tuple[jax.Array, dict]]


def _pad_to_chunks(x, chunk: int, axis: int = 1):
  pad = (-x.shape[axis]) % chunk
  if not pad:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths)


def _to_chunks(x_BxL, chunk: int):
  """[B, L, ...] -> [n, B, chunk, ...]; the ragged tail is zero-padded (a zero mask there)."""
  x = _pad_to_chunks(x_BxL, chunk)
  b, n = x.shape[0], x.shape[1] // chunk
  return x.reshape(b, n, chunk, *x.shape[2:]).swapaxes(0, 1)


def chunk_logits(h_BxCxD, w_DxV, logits_dtype) -> jax.Array:
  """[B, C, V] in `logits_dtype`, handed on as float32 (a fused convert, no copy)."""
  return jnp.einsum("bcd,dv->bcv", h_BxCxD, w_DxV, preferred_element_type=logits_dtype).astype(
      jnp.float32
  )


def _aux_zeros(chunk_fn, h_BxLxD, w_DxV, inputs, consts, chunk):
  b, _, d = h_BxLxD.shape
  logits = jax.ShapeDtypeStruct((b, chunk, w_DxV.shape[1]), jnp.float32)
  one = jax.tree.map(lambda x: jax.ShapeDtypeStruct((b, chunk, *x.shape[2:]), x.dtype), inputs)
  _, aux = jax.eval_shape(chunk_fn, logits, one, consts)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), aux)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _fused(h_BxLxD, w_DxV, inputs, consts, chunk_fn, chunk, logits_dtype):
  """The loss only (nothing differentiated): one chunk of logits at a time."""

  def one_chunk(carry, xs):
    h_BxCxD, inputs_c = xs
    loss, aux = chunk_fn(chunk_logits(h_BxCxD, w_DxV, logits_dtype), inputs_c, consts)
    return jax.tree.map(jnp.add, carry, (loss, aux)), None

  zero = (jnp.zeros((), jnp.float32), _aux_zeros(chunk_fn, h_BxLxD, w_DxV, inputs, consts, chunk))
  xs = (_to_chunks(h_BxLxD, chunk), jax.tree.map(lambda x: _to_chunks(x, chunk), inputs))
  out, _ = jax.lax.scan(one_chunk, zero, xs)
  return out


def _fused_fwd(h_BxLxD, w_DxV, inputs, consts, chunk_fn, chunk, logits_dtype):
  B, L, D = h_BxLxD.shape

  def one_chunk(carry, xs):
    total, dw_DxV = carry
    h_BxCxD, inputs_c = xs
    logits = chunk_logits(h_BxCxD, w_DxV, logits_dtype)
    (loss, aux), dlogits = jax.value_and_grad(chunk_fn, has_aux=True)(logits, inputs_c, consts)
    dlogits_BxCxV = dlogits.astype(h_BxCxD.dtype)
    dh_BxCxD = jnp.einsum(
        "bcv,dv->bcd", dlogits_BxCxV, w_DxV, preferred_element_type=jnp.float32
    ).astype(h_BxCxD.dtype)
    dw_DxV = constrain(
        dw_DxV
        + jnp.einsum("bcd,bcv->dv", h_BxCxD, dlogits_BxCxV, preferred_element_type=jnp.float32),
        ("embed", "vocab"),
    )
    return (jax.tree.map(jnp.add, total, (loss, aux)), dw_DxV), dh_BxCxD

  zero = (jnp.zeros((), jnp.float32), _aux_zeros(chunk_fn, h_BxLxD, w_DxV, inputs, consts, chunk))
  dw0 = constrain(jnp.zeros(w_DxV.shape, jnp.float32), ("embed", "vocab"))  # laid out as w
  xs = (_to_chunks(h_BxLxD, chunk), jax.tree.map(lambda x: _to_chunks(x, chunk), inputs))
  (total, dw_DxV), dh_NxBxCxD = jax.lax.scan(one_chunk, (zero, dw0), xs)
  dh_BxLxD = dh_NxBxCxD.swapaxes(0, 1).reshape(B, -1, D)[:, :L]
  return total, (dh_BxLxD, dw_DxV.astype(w_DxV.dtype))


def _fused_bwd(chunk_fn, chunk, logits_dtype, residuals, cotangents):
  del chunk_fn, chunk, logits_dtype
  dh_BxLxD, dw_DxV = residuals
  g = cotangents[0]  # the loss sum's; aux sums are measurements and carry no gradient
  return ((g * dh_BxLxD).astype(dh_BxLxD.dtype), (g * dw_DxV).astype(dw_DxV.dtype), None, None)


_fused.defvjp(_fused_fwd, _fused_bwd)


def chunked_token_loss(
    h_BxLxD: jax.Array,
    w_DxV: jax.Array,
    inputs: dict[str, jax.Array],
    chunk_fn: ChunkFn,
    *,
    chunk: int,
    consts: Any = None,
    logits_dtype=jnp.float32,
    positions: int = 0,
    mask_key: str = "mask",
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(sum over chunks of `chunk_fn`'s loss, sums of its aux measurements).

  `inputs` are per-position arrays `[B, L, ...]` (targets, masks, teacher hidden states or
  top-k), cut into the same chunks as `h`; padded positions are zeros, so `chunk_fn` must weight
  every token by a mask it reads from `inputs`. `consts` (e.g. a teacher's unembedding matrix)
  reach every chunk whole. Neither receives a gradient: only `h` and `w` do. `chunk_fn` must be
  hashable (a frozen dataclass or a module-level function): it is a static argument.
  The weight is cast to the hidden states' (compute) dtype; gradients flow back through it.
  `positions = K > 0`: only each row's first K positions where `inputs[mask_key]` is set go
  through the LM head (`positions.gather`; the caller guarantees no row has more).
  """
  h_BxLxD, inputs = pos.gather(h_BxLxD, inputs, mask_key, positions)
  chunk = min(chunk, h_BxLxD.shape[1])
  return _fused(
      h_BxLxD, w_DxV.astype(h_BxLxD.dtype), inputs, consts, chunk_fn, chunk, jnp.dtype(logits_dtype)
  )
