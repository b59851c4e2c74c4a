"""A teacher's top-k next-token distribution at chosen positions, without [B, L, V] logits.

For each gathered position with final hidden state h and the aligned vocabulary (the first
`vocab_columns` columns of the unembedding W):
  z = h W[:, :V],  lse = logsumexp(z),
  topk_logprobs = top_k(z) - lse                         (log-softmax over the V columns),
  tail = logsumexp(z over the columns outside the top k) - lse
       = log(1 - sum(exp(topk_logprobs)))                 (the mass the top k leave out).
The tail is a logsumexp over the other columns, not log1p(-sum), so it keeps its precision
when the top k hold all but 1e-9 of the mass; lse itself is logaddexp(lse of the other columns,
lse of the top k), so V columns are exponentiated once. Positions are scanned `chunk` at a time, so
only [B, chunk, V] float32 logits exist at once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx


def topk_at_positions(
    model,
    input_ids_BxL,
    positions_BxL,
    segment_ids_BxL,
    gather_BxP,
    *,
    k: int,
    vocab_columns: int,
    chunk: int,
):
  """-> (topk_ids [B, P, k] int32, topk_logprobs [B, P, k] f32, tail [B, P] f32) at the row
  positions `gather_BxP` (P a multiple of `chunk`)."""
  h_BxLxD, _ = model.hidden_states(input_ids_BxL, positions_BxL, segment_ids_BxL)
  h_BxPxD = jnp.take_along_axis(h_BxLxD, gather_BxP[..., None], axis=1)
  w_DxV = model.unembed_matrix()[:, :vocab_columns].astype(h_BxPxD.dtype)
  B, P, D = h_BxPxD.shape
  n = P // chunk
  h_NxBxCxD = h_BxPxD.reshape(B, n, chunk, D).swapaxes(0, 1)

  def one_chunk(_, h_BxCxD):
    z_BxCxV = jnp.einsum("bcd,dv->bcv", h_BxCxD, w_DxV, preferred_element_type=jnp.float32)
    vals_BxCxK, ids_BxCxK = jax.lax.top_k(z_BxCxV, k)
    b = jnp.arange(B)[:, None, None]
    c = jnp.arange(chunk)[None, :, None]
    rest_BxCxV = z_BxCxV.at[b, c, ids_BxCxK].set(-jnp.inf)
    # One pass over V: lse = logaddexp(lse of the rest, lse of the top k).
    lse_rest_BxC = jax.nn.logsumexp(rest_BxCxV, axis=-1)
    lse_BxC = jnp.logaddexp(lse_rest_BxC, jax.nn.logsumexp(vals_BxCxK, axis=-1))
    return None, (
        ids_BxCxK.astype(jnp.int32),
        vals_BxCxK - lse_BxC[..., None],
        lse_rest_BxC - lse_BxC,
    )

  _, (ids, logprobs, tail) = jax.lax.scan(one_chunk, None, h_NxBxCxD)
  return (
      ids.swapaxes(0, 1).reshape(B, P, k),
      logprobs.swapaxes(0, 1).reshape(B, P, k),
      tail.swapaxes(0, 1).reshape(B, P),
  )


@functools.partial(jax.jit, static_argnames=("graphdef", "k", "vocab_columns", "chunk"))
def jitted_topk(
    graphdef,
    params,
    input_ids_BxL,
    positions_BxL,
    segment_ids_BxL,
    gather_BxP,
    *,
    k: int,
    vocab_columns: int,
    chunk: int,
):
  """`topk_at_positions` on `nnx.merge(graphdef, params)`, jitted once per shape."""
  model = nnx.merge(graphdef, params)
  return topk_at_positions(
      model,
      input_ids_BxL,
      positions_BxL,
      segment_ids_BxL,
      gather_BxP,
      k=k,
      vocab_columns=vocab_columns,
      chunk=chunk,
  )
