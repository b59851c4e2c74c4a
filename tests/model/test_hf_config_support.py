"""HF settings the model does not implement are refused naming the key; YaRN (Qwen2.5's long-context
recipe) is implemented, in both spellings, and matches transformers' logits."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

import distil_jax
from distil_jax.hf import CheckpointError
from distil_jax.model import ModelConfig
from distil_jax.model.attention import rope
from distil_jax.testing.hf_models import hf_logits, make_hf_checkpoint

LOGIT_ATOL = 2e-5  # float32 end to end, as test_hf_parity.py
# Positions past original_max_position_embeddings (32) so the interpolated frequencies matter.
IDS = np.random.RandomState(1).randint(0, 256, size=(2, 80))
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}


@pytest.fixture(scope="module")
def yarn_dir(tmp_path_factory):
  """A checkpoint saved by transformers 5: `rope_parameters` with rope_type yarn."""
  path = str(tmp_path_factory.mktemp("yarn") / "hf")
  return make_hf_checkpoint(
      path, rope_parameters={**YARN, "rope_theta": 10000.0}, max_position_embeddings=128
  )


def _edited_copy(src, dst, edit):
  shutil.copytree(src, dst)
  path = os.path.join(dst, "config.json")
  cfg = json.load(open(path))
  edit(cfg)
  json.dump(cfg, open(path, "w"))
  return str(dst)


def _logits(path):
  return np.asarray(distil_jax.from_pretrained(path, dtype=jnp.float32)(jnp.asarray(IDS)))


def test_yarn_written_the_transformers_5_way_matches_transformers(yarn_dir):
  assert (
      json.load(open(os.path.join(yarn_dir, "config.json")))["rope_parameters"]["rope_type"]
      == "yarn"
  )
  ours, theirs = _logits(yarn_dir), hf_logits(yarn_dir, IDS)
  np.testing.assert_allclose(ours, theirs, atol=LOGIT_ATOL, rtol=0)


def test_yarn_written_the_transformers_4_way_matches_transformers(yarn_dir, tmp_path):
  def to_v4(cfg):
    params = cfg.pop("rope_parameters")
    cfg["rope_theta"] = params.pop("rope_theta")
    cfg["rope_scaling"] = {
        "type": "yarn",
        "factor": params["factor"],
        "original_max_position_embeddings": params["original_max_position_embeddings"],
    }

  path = _edited_copy(yarn_dir, tmp_path / "v4", to_v4)
  np.testing.assert_allclose(_logits(path), hf_logits(path, IDS), atol=LOGIT_ATOL, rtol=0)
  np.testing.assert_allclose(_logits(path), _logits(yarn_dir), atol=0, rtol=0)


def test_yarn_changes_the_logits_so_the_parity_above_means_something(yarn_dir, tmp_path):
  plain = _edited_copy(
      yarn_dir,
      tmp_path / "plain",
      lambda c: c.update(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
  )
  assert np.abs(_logits(plain) - _logits(yarn_dir)).max() > 1e-2


def test_yarn_survives_export_and_reloads_in_transformers(yarn_dir, tmp_path):
  out = distil_jax.save_pretrained(
      distil_jax.from_pretrained(yarn_dir, dtype=jnp.float32),
      str(tmp_path / "out"),
      tokenizer=False,
  )
  np.testing.assert_allclose(hf_logits(out, IDS), hf_logits(yarn_dir, IDS), atol=LOGIT_ATOL, rtol=0)


def test_default_rope_is_bit_identical_to_the_unscaled_formula():
  x = jnp.asarray(np.random.RandomState(0).randn(2, 5, 3, 16), jnp.float32)
  pos = jnp.asarray(np.arange(10).reshape(2, 5) * 7, jnp.int32)
  h = 16
  inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
  angles = jnp.concatenate([pos.astype(jnp.float32)[..., None] * inv_freq] * 2, axis=-1)
  x1, x2 = jnp.split(x, 2, axis=-1)
  want = (
      x * jnp.cos(angles)[:, :, None] + jnp.concatenate([-x2, x1], -1) * jnp.sin(angles)[:, :, None]
  )
  assert np.array_equal(np.asarray(rope(x, pos, 10000.0)), np.asarray(want))
  assert ModelConfig.tiny().rope_scaling is None


BASE = dict(
    model_type="qwen2",
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rope_theta=10000.0,
)


@pytest.mark.parametrize(
    "change, key",
    [
        (
            dict(use_sliding_window=True, sliding_window=16, max_window_layers=1),
            "use_sliding_window: true",
        ),
        (dict(layer_types=["full_attention", "sliding_attention"]), "layer_types[1]"),
        (dict(rope_scaling={"type": "dynamic", "factor": 2.0}), "rope_scaling.rope_type 'dynamic'"),
        (
            dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 1e4}),
            "rope_parameters.rope_type 'llama3'",
        ),
        (
            dict(rope_parameters={"rope_type": "longrope", "rope_theta": 1e4}),
            "rope_parameters.rope_type 'longrope'",
        ),
        (
            dict(rope_parameters={**YARN, "partial_rotary_factor": 0.5}),
            "rope_parameters.partial_rotary_factor",
        ),
        (dict(rope_parameters={"rope_type": "default", "factor": 2.0}), "rope_parameters.factor"),
        (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
        (dict(partial_rotary_factor=0.5), "partial_rotary_factor=0.5"),
        (dict(quantization_config={"quant_method": "awq"}), "quantization_config"),
    ],
)
def test_unimplemented_settings_are_refused_naming_the_key(change, key):
  with pytest.raises(ValueError) as e:
    ModelConfig.from_hf({**BASE, **change}, source="cfg.json")
  assert key in str(e.value) and str(e.value).startswith("cfg.json: ")


def test_sliding_window_flag_with_every_layer_full_is_accepted():
  cfg = ModelConfig.from_hf(
      {**BASE, "use_sliding_window": True, "sliding_window": 16, "max_window_layers": 2}
  )
  assert cfg.rope_scaling is None


def test_a_refused_checkpoint_names_its_config_file(yarn_dir, tmp_path):
  path = _edited_copy(
      yarn_dir,
      tmp_path / "sliding",
      lambda c: c.update(
          use_sliding_window=True,
          sliding_window=8,
          layer_types=["full_attention", "sliding_attention"],
      ),
  )
  with pytest.raises(CheckpointError, match=r"config\.json: use_sliding_window: true"):
    distil_jax.from_pretrained(path)


def test_yarn_survives_the_orbax_model_config_round_trip():
  from distil_jax import checkpoints

  cfg = ModelConfig.from_hf(
      {
          **BASE,
          "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
      }
  )
  saved = json.loads(json.dumps(checkpoints.config_to_json(cfg)))
  assert checkpoints.config_from_json(saved) == cfg and cfg.rope_scaling.factor == 4.0
