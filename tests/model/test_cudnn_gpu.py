"""On a GPU: both cuDNN attention paths (dense mask, ragged layout) equal the XLA reference.

Skipped elsewhere; the CPU tests only prove that these paths lower (test_cudnn_lowering.py).
tests/conftest.py defaults JAX to the CPU, so on a GPU machine run:

    JAX_PLATFORMS=cuda .venv/bin/python -m pytest -q tests/model/test_cudnn_gpu.py

Inputs are bf16, the reference runs in float32 on the same bf16 values. bf16 keeps 8
significant bits (a relative step of 2^-8, 0.4%) and the kernels accumulate in float32, so:
outputs agree within 2e-2 absolute (they are O(1)); gradients within 2% of the largest
reference gradient of the same tensor. Through the whole (2-layer, bf16) model the losses
agree within 1% and every parameter gradient within 5% of that parameter's largest one.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from distil_jax.model import AttentionImpl, ModelConfig, Qwen2, abstract_model
from distil_jax.model.attention import attend_xla, segment_causal_mask, self_attention
from distil_jax.train.losses import SFTLoss
from distil_jax.train.objective import apply_loss

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "gpu", reason="cuDNN attention runs on a GPU only"
)

B, T, N, K, H = 2, 512, 12, 2, 128  # the Qwen2.5-1.5B head layout
DOCS = 4


def _hopper() -> bool:
  return tuple(int(x) for x in jax.devices()[0].compute_capability.split(".")) >= (9, 0)


def _rows(*documents):
  """Segment ids and restarting positions for rows of the given document lengths."""
  segments, positions = [], []
  for lengths in documents:
    seg = [i + 1 for i, n in enumerate(lengths) for _ in range(n)]
    pos = [p for n in lengths for p in range(n)]
    segments.append(seg + [0] * (T - len(seg)))
    positions.append(pos + [0] * (T - len(pos)))
  return jnp.asarray(positions, jnp.int32), jnp.asarray(segments, jnp.int32)


def _inputs(seed=0):
  kq, kk, kv, ko = jax.random.split(jax.random.key(seed), 4)
  return (
      jax.random.normal(kq, (B, T, N, H), jnp.bfloat16),
      jax.random.normal(kk, (B, T, K, H), jnp.bfloat16),
      jax.random.normal(kv, (B, T, K, H), jnp.bfloat16),
      jax.random.normal(ko, (B, T, N, H), jnp.bfloat16),
  )


def _value_and_vjp(attention, q, k, v, cotangent):
  out, vjp = jax.vjp(attention, q, k, v)
  return out, vjp(cotangent.astype(out.dtype))


def _assert_close(got, want):
  out, grads = got
  ref_out, ref_grads = want
  np.testing.assert_allclose(np.float32(out), np.float32(ref_out), atol=2e-2)
  for name, g, r in zip("qkv", grads, ref_grads):
    scale = float(jnp.max(jnp.abs(r)))
    np.testing.assert_allclose(np.float32(g), np.float32(r), atol=2e-2 * scale, err_msg=f"d{name}")


def _reference(q, k, v, cotangent, positions, segments):
  mask = segment_causal_mask(positions, segments, positions, segments)
  attention = lambda q, k, v: attend_xla(q, k, v, mask)
  as_f32 = lambda *xs: [x.astype(jnp.float32) for x in xs]
  return jax.jit(lambda *xs: _value_and_vjp(attention, *as_f32(*xs)))(q, k, v, cotangent)


def _cudnn(q, k, v, cotangent, positions, segments, max_segments_per_row):
  attention = lambda q, k, v: self_attention(
      AttentionImpl.CUDNN, q, k, v, positions, segments, max_segments_per_row=max_segments_per_row
  )
  return jax.jit(lambda q, k, v, c: _value_and_vjp(attention, q, k, v, c))(q, k, v, cotangent)


@pytest.mark.parametrize("max_segments_per_row", [0, DOCS], ids=["dense_mask", "ragged"])
def test_cudnn_paths_match_xla_forward_and_gradients(max_segments_per_row):
  if max_segments_per_row and not _hopper():
    pytest.skip("cuDNN's ragged layout needs Hopper or later")
  positions, segments = _rows([200, 150, 100], [T])  # three documents + padding; one document
  q, k, v, cotangent = _inputs()
  _assert_close(
      _cudnn(q, k, v, cotangent, positions, segments, max_segments_per_row),
      _reference(q, k, v, cotangent, positions, segments),
  )


def test_ragged_path_row_over_capacity_stays_finite_and_leaves_other_rows_exact():
  if not _hopper():
    pytest.skip("cuDNN's ragged layout needs Hopper or later")
  positions, segments = _rows([64] * (DOCS + 2), [300, 100])  # row 0: two documents too many
  q, k, v, cotangent = _inputs(1)
  out, grads = _cudnn(q, k, v, cotangent, positions, segments, DOCS)
  assert all(bool(jnp.isfinite(x).all()) for x in (out, *grads))
  ref_out, ref_grads = _reference(q, k, v, cotangent, positions, segments)
  in_capacity = slice(0, DOCS * 64)  # row 0's first DOCS documents keep their own slots
  np.testing.assert_allclose(np.float32(out[0, in_capacity]), ref_out[0, in_capacity], atol=2e-2)
  _assert_close((out[1:], [g[1:] for g in grads]), (ref_out[1:], [g[1:] for g in ref_grads]))


@pytest.mark.parametrize("max_segments_per_row", [0, DOCS], ids=["dense_mask", "ragged"])
def test_model_sft_loss_and_gradients_with_cudnn_match_xla(max_segments_per_row):
  if max_segments_per_row and not _hopper():
    pytest.skip("cuDNN's ragged layout needs Hopper or later")
  cfg = ModelConfig.tiny(
      num_heads=N,
      num_kv_heads=K,
      head_dim=H,
      hidden_size=256,
      intermediate_size=512,
      compute_dtype=jnp.bfloat16,
  )
  positions, segments = _rows([200, 150, 100], [T])
  ids = jax.random.randint(jax.random.key(2), (B, T), 0, cfg.vocab_size, jnp.int32)
  batch = dict(
      input_ids=ids,
      target_ids=jnp.roll(ids, -1, axis=1),
      positions=positions,
      segment_ids=segments,
      loss_mask=(segments != 0).astype(jnp.float32),
  )
  params = nnx.state(Qwen2(cfg, rngs=nnx.Rngs(0)))

  def loss_and_grads(model_cfg):
    graphdef = nnx.split(abstract_model(model_cfg))[0]
    loss = lambda p: apply_loss(SFTLoss(chunk=128), nnx.merge(graphdef, p), batch)[0]
    return jax.jit(jax.value_and_grad(loss))(params)

  ref_loss, ref_grads = loss_and_grads(cfg)
  cudnn_cfg = dataclasses.replace(
      cfg, attention_impl=AttentionImpl.CUDNN, max_segments_per_row=max_segments_per_row
  )
  loss, grads = loss_and_grads(cudnn_cfg)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-2)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, atol=5e-2 * float(jnp.max(jnp.abs(r))))
