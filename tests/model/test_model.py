"""The Qwen2 module: packing, the KV cache, meshes, scan and remat."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import distil_jax
from distil_jax.model import KVCache, ModelConfig, Qwen2, RematPolicy, create_model
from distil_jax.sharding import MeshConfig, make_mesh, use_mesh
from distil_jax.testing.hf_models import make_hf_checkpoint

CFG = ModelConfig.tiny()


@pytest.fixture(scope="module")
def model():
  return Qwen2(CFG, rngs=nnx.Rngs(0))


def _ids(shape, seed=0):
  return jnp.asarray(np.random.RandomState(seed).randint(0, CFG.vocab_size, shape), jnp.int32)


def test_packed_documents_do_not_see_each_other_and_restart_positions(model):
  a, b = _ids((1, 5), 1), _ids((1, 7), 2)
  packed = jnp.concatenate([a, b, jnp.zeros((1, 4), jnp.int32)], axis=1)
  segments = jnp.asarray([[1] * 5 + [2] * 7 + [0] * 4], jnp.int32)
  positions = jnp.asarray([list(range(5)) + list(range(7)) + [0] * 4], jnp.int32)
  out = model(packed, positions, segments)
  np.testing.assert_allclose(out[:, :5], model(a), atol=1e-5)
  np.testing.assert_allclose(out[:, 5:12], model(b), atol=1e-5)


def test_right_padded_prefill_then_decode_matches_the_full_forward(model):
  lengths = jnp.asarray([3, 6])  # row 0 is a 3-token prompt padded to 6
  sequences = _ids((2, 9), 4)
  reference = model(sequences)
  cache = KVCache.init(CFG, batch=2, max_len=12)
  _, cache = model(sequences[:, :6], jnp.broadcast_to(jnp.arange(6), (2, 6)), cache=cache)
  for step in range(3):
    pos = lengths + step
    token = sequences[jnp.arange(2), pos][:, None]
    logits, cache = model(token, pos[:, None], cache=cache)
    np.testing.assert_allclose(logits[:, 0], reference[jnp.arange(2), pos], atol=1e-5)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  # 8 heads / 4 kv heads / 256 vocab / 64 hidden divide evenly over 8 devices.
  return make_hf_checkpoint(
      str(tmp_path_factory.mktemp("mesh") / "hf"),
      num_attention_heads=8,
      num_key_value_heads=4,
      hidden_size=128,
      intermediate_size=256,
  )


MESHES = {
    "fsdp8": MeshConfig(data=1, fsdp=8),
    "tensor4_data2": MeshConfig(data=2, tensor=4),
    "data2_fsdp2_tensor2": MeshConfig(data=2, fsdp=2, tensor=2),
}


@pytest.mark.parametrize("layout", sorted(MESHES))
def test_sharded_layouts_give_single_device_logits(hf_dir, layout):
  ids = _ids((8, 16), 5) % 256
  single = np.asarray(distil_jax.from_pretrained(hf_dir, dtype=jnp.float32)(ids))
  mesh = make_mesh(MESHES[layout])
  model = distil_jax.from_pretrained(hf_dir, mesh=mesh, dtype=jnp.float32)
  sharded_axes = {a for a in model.layers.gate_kernel[...].sharding.spec if a}
  assert sharded_axes, "gate kernel should be split over the mesh"
  with use_mesh(mesh):
    out = jax.jit(lambda m, x: m(x))(model, ids)
  # float32; reductions split across shards reorder sums: observed ~1e-7.
  np.testing.assert_allclose(np.asarray(out), single, atol=1e-5, rtol=0)


def test_sharded_init_places_params_without_an_unsharded_copy():
  mesh = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
  model = create_model(ModelConfig.tiny(num_heads=4, num_kv_heads=2), mesh, seed=0)
  spec = model.layers.q_kernel[...].sharding.spec
  assert tuple(spec) == (None, "fsdp", "tensor", None)
  assert model.embed[...].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")


def test_compiled_program_does_not_grow_with_depth():
  def hlo_size(layers):
    m = nnx.eval_shape(lambda: Qwen2(ModelConfig.tiny(num_layers=layers), rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(m)
    f = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    return len(f.lower(state, jax.ShapeDtypeStruct((1, 8), jnp.int32)).as_text())

  assert hlo_size(16) < 1.05 * hlo_size(2)


@pytest.mark.parametrize("policy", [RematPolicy.FULL, RematPolicy.DOTS, RematPolicy.DOTS_NO_BATCH])
def test_remat_policies_change_memory_not_gradients(policy):
  ids = _ids((2, 8), 6)

  def grads(cfg):
    m = Qwen2(cfg, rngs=nnx.Rngs(0))
    return nnx.grad(lambda m: jnp.mean(m(ids) ** 2))(m)

  base = grads(CFG)
  other = grads(ModelConfig.tiny(remat_policy=policy))
  for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(other)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_bf16_compute_with_fp32_params_stays_close_to_fp32():
  ids = _ids((2, 8), 7)
  fp32 = Qwen2(CFG, rngs=nnx.Rngs(0))
  mixed = Qwen2(ModelConfig.tiny(compute_dtype=jnp.bfloat16), rngs=nnx.Rngs(0))
  assert mixed.embed[...].dtype == jnp.float32
  out = mixed(ids)
  np.testing.assert_allclose(out, fp32(ids), atol=0.05)
