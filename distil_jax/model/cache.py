"""The decode-time key/value cache: one slot per position, stacked over layers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from distil_jax.model.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
  """k, v: [layers, B, S, K, H]. A token at position p lives in slot p of its row, and a
  query at position p sees slots 0..p, so right-padded prompts need no extra mask:
  padding slots are masked until the next decoded token overwrites them."""

  k: jax.Array
  v: jax.Array

  @classmethod
  def init(cls, cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> "KVCache":
    shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
    dtype = dtype or cfg.compute_dtype
    return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype))

  @property
  def max_len(self) -> int:
    return self.k.shape[2]


def write_slots(
    cache_BxSxKxH: jax.Array, new_BxTxKxH: jax.Array, positions_BxT: jax.Array
) -> jax.Array:
  """Write each row's new keys/values into the slots named by their positions.

  A single decoded token is a select against a one-hot slot mask (measured 5.0 -> 2.7 ms a
  step at batch 32 on CPU against a scatter); a prefill is a scatter."""
  if new_BxTxKxH.shape[1] == 1:
    slot_BxS = jnp.arange(cache_BxSxKxH.shape[1])[None, :] == positions_BxT[:, :1]
    return jnp.where(
        slot_BxS[:, :, None, None], new_BxTxKxH.astype(cache_BxSxKxH.dtype), cache_BxSxKxH
    )

  def one_row(cache_SxKxH, new_TxKxH, pos_T):
    return cache_SxKxH.at[pos_T].set(new_TxKxH.astype(cache_SxKxH.dtype), mode="drop")

  return jax.vmap(one_row)(cache_BxSxKxH, new_BxTxKxH, positions_BxT)
