"""TPU attention: Pallas splash attention (causal, packed segments, GQA).

On TPU the kernel runs natively; elsewhere (tests on CPU) it runs in Pallas interpret
mode, which executes the same kernel code slowly. Pallas kernels cannot be partitioned
by the compiler, so under a mesh the kernel runs per shard inside `shard_map`, with the
batch split over the data axes and the heads over the tensor axis.
"""

from __future__ import annotations

import functools

import jax
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

from distil_jax.sharding import current_spec

_BLOCK = 512


def _block(seq_len: int) -> int:
  for size in (_BLOCK, 256, 128):
    if seq_len % size == 0:
      return size
  raise ValueError(f"splash attention needs a sequence length divisible by 128, got {seq_len}")


@functools.lru_cache(maxsize=32)
def _kernel(num_heads: int, seq_len: int, interpret: bool):
  b = _block(seq_len)
  sizes = splash.BlockSizes(
      block_q=b,
      block_kv=b,
      block_kv_compute=b,
      block_q_dkv=b,
      block_kv_dkv=b,
      block_kv_dkv_compute=b,
      block_q_dq=b,
      block_kv_dq=b,
  )
  mask = masks.MultiHeadMask([masks.CausalMask((seq_len, seq_len))] * num_heads)
  return splash.make_splash_mha(
      mask, head_shards=1, q_seq_shards=1, block_sizes=sizes, interpret=interpret
  )


def attend_splash(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segment_ids_BxT) -> jax.Array:
  interpret = jax.devices()[0].platform != "tpu"
  scale = q_BxTxNxH.shape[-1] ** -0.5

  def local(q, k, v, seg):
    kernel = _kernel(q.shape[2], q.shape[1], interpret)

    def one(q_NxTxH, k_KxTxH, v_KxTxH, seg_T):
      return kernel(
          q_NxTxH * scale, k_KxTxH, v_KxTxH, segment_ids=splash.SegmentIds(q=seg_T, kv=seg_T)
      )

    out = jax.vmap(one)(
        q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), seg
    )
    return out.transpose(0, 2, 1, 3)

  q_spec = current_spec(("batch", "seq", "act_heads", "head_dim"), q_BxTxNxH.shape)
  if q_spec is None:
    return local(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segment_ids_BxT)
  kv_spec = current_spec(("batch", "seq", "act_kv_heads", "head_dim"), k_BxTxKxH.shape)
  if (q_spec[2] is None) != (kv_spec[2] is None):  # heads must split alike for GQA groups
    q_spec = jax.sharding.PartitionSpec(q_spec[0], None, None, None)
    kv_spec = jax.sharding.PartitionSpec(kv_spec[0], None, None, None)
  seg_spec = jax.sharding.PartitionSpec(q_spec[0], None)
  return jax.shard_map(
      local, in_specs=(q_spec, kv_spec, kv_spec, seg_spec), out_specs=q_spec, check_vma=False
  )(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segment_ids_BxT)
