"""A HF Qwen2 checkpoint loads into distil-jax with transformers' logits, and exports back
bit-identical."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import Qwen2ForCausalLM

import distil_jax
from distil_jax.testing.hf_models import hf_logits, make_hf_checkpoint

# float32 end to end; observed max |diff| ~2e-7 on logits of magnitude ~0.3-1.
LOGIT_ATOL = 2e-5

CASES = {
    "untied_gqa_7to1": dict(
        num_attention_heads=7, num_key_value_heads=1, hidden_size=112, tie_word_embeddings=False
    ),
    "tied_gqa_6to1": dict(
        num_attention_heads=6, num_key_value_heads=1, hidden_size=96, tie_word_embeddings=True
    ),
    "tied_gqa_2to1_sharded_files": dict(
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=64,
        tie_word_embeddings=True,
        max_shard_size="60KB",
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def hf_dir(request, tmp_path_factory):
  path = str(tmp_path_factory.mktemp(request.param) / "hf")
  return make_hf_checkpoint(path, num_hidden_layers=3, **CASES[request.param])


def test_logits_match_transformers_in_float32(hf_dir):
  ids = np.random.RandomState(0).randint(0, 256, size=(3, 17))
  ours = np.asarray(distil_jax.from_pretrained(hf_dir, dtype=jnp.float32)(jnp.asarray(ids)))
  np.testing.assert_allclose(ours, hf_logits(hf_dir, ids), atol=LOGIT_ATOL, rtol=0)


def test_export_round_trip_is_bit_identical_and_loads_in_transformers(hf_dir, tmp_path):
  model = distil_jax.from_pretrained(hf_dir, dtype=jnp.float32)
  out = distil_jax.save_pretrained(model, str(tmp_path / "export"), tokenizer=False)
  original, exported = _tensors(hf_dir), _tensors(out)
  assert set(original) == set(exported)
  for name in original:
    assert torch.equal(original[name], exported[name]), name
  index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
  assert set(index["weight_map"]) == set(exported)
  src, dst = (json.load(open(os.path.join(d, "config.json"))) for d in (hf_dir, out))
  for key in (
      "vocab_size",
      "hidden_size",
      "intermediate_size",
      "num_hidden_layers",
      "num_attention_heads",
      "num_key_value_heads",
      "rms_norm_eps",
      "tie_word_embeddings",
      "max_position_embeddings",
      "model_type",
  ):
    assert src[key] == dst[key], key
  reloaded = Qwen2ForCausalLM.from_pretrained(out)
  assert reloaded.config.tie_word_embeddings == src["tie_word_embeddings"]


def test_export_splits_shards_under_the_size_limit(hf_dir, tmp_path):
  model = distil_jax.from_pretrained(hf_dir, dtype=jnp.float32)
  out = distil_jax.save_pretrained(
      model, str(tmp_path / "export"), tokenizer=False, max_shard_bytes=100_000
  )
  files = [f for f in os.listdir(out) if f.endswith(".safetensors")]
  assert len(files) > 1
  biggest_tensor = max(t.numel() * 4 for t in _tensors(out).values())
  for f in files:
    assert os.path.getsize(os.path.join(out, f)) <= max(100_000, biggest_tensor) + 4096
  ids = np.arange(12).reshape(2, 6)
  np.testing.assert_allclose(hf_logits(out, ids), hf_logits(hf_dir, ids), atol=0, rtol=0)


def test_bfloat16_checkpoint_loads_and_exports_as_bfloat16(tmp_path):
  path = make_hf_checkpoint(str(tmp_path / "bf16"), dtype="bfloat16")
  model = distil_jax.from_pretrained(path)
  assert model.embed[...].dtype == jnp.bfloat16
  out = distil_jax.save_pretrained(model, str(tmp_path / "out"), tokenizer=False)
  a, b = _tensors(path), _tensors(out)
  assert all(b[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in a)


def _tensors(path):
  out = {}
  for f in sorted(os.listdir(path)):
    if f.endswith(".safetensors"):
      out.update(load_file(os.path.join(path, f)))
  return out


def test_import_compiles_one_layer_write_per_tensor_kind_not_per_layer(tmp_path):
  from distil_jax.hf import load
  from distil_jax.hf.mapping import TABLE

  path = make_hf_checkpoint(str(tmp_path / "hf"), num_hidden_layers=6)
  load._set_layer.clear_cache()
  distil_jax.from_pretrained(path, dtype=jnp.float32)
  # An 80-layer 72B would otherwise compile ~1,000 tiny programs while importing.
  assert load._set_layer._cache_size() <= sum(rule.per_layer for rule in TABLE)
