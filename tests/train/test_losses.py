"""The chunked cross-entropy: same loss and gradients as the naive one, a fraction of the memory."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from flax import nnx

from distil_jax.model import ModelConfig, create_model
from distil_jax.sharding import MeshConfig, make_mesh
from distil_jax.train.losses import (
    NaiveSFTLoss,
    SFTLoss,
    chunked_cross_entropy,
    naive_cross_entropy,
)
from distil_jax.train.objective import apply_loss
from synthetic import SyntheticBatches


def test_chunked_loss_and_grads_equal_the_naive_loss():
  seq_len, chunk = 56, 16  # a ragged last chunk
  cfg = ModelConfig.tiny(compute_dtype=jnp.float32)
  model = create_model(cfg, make_mesh(MeshConfig(data=1), jax.devices()[:1]))
  graphdef, params = nnx.split(model)
  batch = next(SyntheticBatches(batch_size=2, seq_len=seq_len, vocab_size=cfg.vocab_size))
  batch = jax.tree.map(jnp.asarray, batch)

  def grads_of(loss_fn):
    f = lambda p: apply_loss(loss_fn, nnx.merge(graphdef, p), batch)
    return jax.jit(jax.value_and_grad(lambda p: f(p)[0]))(params), f(params)[2]

  (chunked, g_chunked), counts_c = grads_of(SFTLoss(chunk=chunk))
  (naive, g_naive), counts_n = grads_of(NaiveSFTLoss())
  assert counts_c["tokens"] == counts_n["tokens"] > 0
  np.testing.assert_allclose(chunked, naive, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g_chunked), jax.tree.leaves(g_naive)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_padding_and_unmasked_tokens_do_not_count():
  h = jax.random.normal(jax.random.key(0), (1, 8, 16))
  w = jax.random.normal(jax.random.key(1), (16, 32))
  targets = jnp.arange(8)[None] % 32
  mask = jnp.array([[1, 1, 1, 0, 0, 0, 0, 0]], jnp.float32)
  full, _ = chunked_cross_entropy(h, w, targets, mask, chunk=4)
  first3, _ = chunked_cross_entropy(h[:, :3], w, targets[:, :3], mask[:, :3], chunk=4)
  np.testing.assert_allclose(full, first3, rtol=1e-6)


def test_chunked_loss_never_holds_the_full_float32_logits():
  # [B, L, V] float32 logits here are 2 x 1024 x 32768 x 4 B = 256 MiB; chunks of 64 are 16 MiB.
  B, L, D, V, chunk = 2, 1024, 64, 32768, 64
  h = jax.ShapeDtypeStruct((B, L, D), jnp.bfloat16)
  w = jax.ShapeDtypeStruct((D, V), jnp.bfloat16)
  t = jax.ShapeDtypeStruct((B, L), jnp.int32)
  m = jax.ShapeDtypeStruct((B, L), jnp.float32)

  def chunked(h, w, t, m):
    return chunked_cross_entropy(h, w, t, m, chunk=chunk)[0]

  def naive(h, w, t, m):
    logits = jnp.einsum("bld,dv->blv", h, w, preferred_element_type=jnp.float32)
    return naive_cross_entropy(logits, t, m)[0]

  def temp_bytes(fn):
    compiled = jax.jit(jax.grad(fn, argnums=(0, 1))).lower(h, w, t, m).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  logits_bytes = B * L * V * 4
  naive_b, chunked_b = temp_bytes(naive), temp_bytes(chunked)
  print(
      f"loss+grad temporaries: naive {naive_b / 2**20:.0f} MiB, "
      f"chunked {chunked_b / 2**20:.0f} MiB (full logits {logits_bytes / 2**20:.0f} MiB)"
  )
  assert naive_b >= logits_bytes
  assert chunked_b < logits_bytes / 4


def _eqns(jaxpr):
  """Every equation of a jaxpr, scan and custom-vjp bodies included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _eqns(sub)


def _dots_over(jaxpr, size):
  """The operand dtypes of every dot_general with a `size` dim."""
  return [
      [v.aval.dtype for v in e.invars]
      for e in _eqns(jaxpr)
      if e.primitive.name == "dot_general"
      and any(size in v.aval.shape for v in (*e.invars, e.outvars[0]))
  ]


def test_lm_head_gradient_is_three_compute_dtype_matmuls_and_matches_float32():
  """bf16 compute: the logits, dh and dW matmuls each run once per chunk (no rematerialised
  forward), all with bf16 operands (a float32 cotangent would make the backward an f32 GEMM,
  several times slower on a GPU), and the gradients stay close to the float32 reference."""
  B, L, D, V = 2, 96, 64, 1000
  h = jax.random.normal(jax.random.key(0), (B, L, D))
  w = jax.random.normal(jax.random.key(1), (D, V)) * 0.1
  t = jax.random.randint(jax.random.key(2), (B, L), 0, V)
  m = (jax.random.uniform(jax.random.key(3), (B, L)) > 0.3).astype(jnp.float32)

  def fused(h, w):
    return chunked_cross_entropy(h.astype(jnp.bfloat16), w, t, m, chunk=32)[0]

  def reference(h, w):
    return naive_cross_entropy(jnp.einsum("bld,dv->blv", h, w), t, m)[0]

  dots = _dots_over(jax.make_jaxpr(jax.grad(fused, argnums=(0, 1)))(h, w).jaxpr, V)
  assert len(dots) == 3
  assert all(dt == jnp.bfloat16 for dtypes in dots for dt in dtypes), dots

  loss, grads = jax.value_and_grad(fused, argnums=(0, 1))(h, w)
  ref_loss, ref_grads = jax.value_and_grad(reference, argnums=(0, 1))(h, w)
  np.testing.assert_allclose(loss, ref_loss, rtol=2e-3)
  for g, r in zip(grads, ref_grads):
    assert g.dtype == r.dtype == jnp.float32
    rel = float(jnp.linalg.norm(g - r) / jnp.linalg.norm(r))
    assert rel < 2e-2, rel


def test_a_batch_without_segment_ids_is_one_document_a_row():
  cfg = ModelConfig.tiny(compute_dtype=jnp.float32)
  model = create_model(cfg, make_mesh(MeshConfig(data=1), jax.devices()[:1]))
  batch = next(SyntheticBatches(batch_size=2, seq_len=32, vocab_size=cfg.vocab_size))
  batch = jax.tree.map(jnp.asarray, batch)
  batch["positions"] = jnp.broadcast_to(jnp.arange(32), (2, 32))
  one_doc = dict(batch, segment_ids=jnp.ones((2, 32), jnp.int32))
  unpacked = {k: v for k, v in batch.items() if k != "segment_ids"}
  loss = SFTLoss(chunk=16)
  np.testing.assert_allclose(
      apply_loss(loss, model, unpacked)[0], apply_loss(loss, model, one_doc)[0], rtol=1e-6
  )


def test_bfloat16_logits_write_half_the_bytes_and_keep_the_loss():
  """`logits_dtype=bfloat16` makes the LM-head matmul emit bf16 (as torch autocast does): the
  [B, chunk, V] tensor that every later pass reads is half the size; the softmax stays f32."""
  B, L, D, V = 2, 64, 64, 1000
  h = jax.random.normal(jax.random.key(0), (B, L, D), jnp.bfloat16)
  w = jax.random.normal(jax.random.key(1), (D, V)) * 0.1
  t = jax.random.randint(jax.random.key(2), (B, L), 0, V)
  m = jnp.ones((B, L))

  def loss(h, w, dtype):
    return chunked_cross_entropy(h, w, t, m, chunk=32, logits_dtype=dtype)[0]

  for dtype in (jnp.float32, jnp.bfloat16):
    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(h, w, dtype).jaxpr
    outputs = [
        e.outvars[0].aval.dtype
        for e in _eqns(jaxpr)
        if e.primitive.name == "dot_general" and e.outvars[0].aval.shape == (B, 32, V)
    ]
    assert outputs == [jnp.dtype(dtype)]  # the one logits matmul, in the asked dtype
  exact, approx = loss(h, w, jnp.float32), loss(h, w, jnp.bfloat16)
  np.testing.assert_allclose(approx, exact, rtol=2e-3)
