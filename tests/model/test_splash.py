"""The TPU splash-attention path (run here in Pallas interpret mode) equals the XLA path,
forward and backward, with packed documents and GQA, on one device and on a mesh."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from distil_jax.model import AttentionImpl, ModelConfig, Qwen2
from distil_jax.sharding import MeshConfig, make_mesh, use_mesh

CFG = ModelConfig.tiny(num_heads=4, num_kv_heads=2, head_dim=128, hidden_size=128, num_layers=1)


def _batch():
  ids = jnp.asarray(np.random.RandomState(0).randint(0, 512, (2, 128)), jnp.int32)
  segments = jnp.asarray([[1] * 50 + [2] * 78, [1] * 128], jnp.int32)
  positions = jnp.asarray([list(range(50)) + list(range(78)), list(range(128))], jnp.int32)
  return ids, positions, segments


def _loss_and_grads(cfg, mesh=None):
  model = Qwen2(cfg, rngs=nnx.Rngs(0))
  ids, positions, segments = _batch()
  graphdef, state = nnx.split(model)

  def loss(state):
    return jnp.mean(nnx.merge(graphdef, state)(ids, positions, segments) ** 2)

  f = jax.jit(jax.value_and_grad(loss))
  if mesh is None:
    return f(state)
  with use_mesh(mesh):
    return f(state)


def test_splash_matches_xla_forward_and_backward():
  ref_loss, ref_grads = _loss_and_grads(CFG)
  for mesh in (None, make_mesh(MeshConfig(data=2, tensor=2), devices=jax.devices()[:4])):
    loss, grads = _loss_and_grads(
        dataclasses.replace(CFG, attention_impl=AttentionImpl.SPLASH), mesh
    )
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(a, b, atol=2e-5)
