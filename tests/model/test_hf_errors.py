"""Bad checkpoints fail with an error that names the file and tensor; nothing is half-written."""

import json
import os
import shutil
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import distil_jax
from distil_jax.hf import CheckpointError
from distil_jax.testing.hf_models import make_hf_checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory):
  return make_hf_checkpoint(str(tmp_path_factory.mktemp("good") / "hf"))


@pytest.fixture
def ckpt(good, tmp_path):
  path = str(tmp_path / "ckpt")
  shutil.copytree(good, path)
  return path


def _rewrite(path, edit):
  f = os.path.join(path, "model.safetensors")
  tensors = load_file(f)
  edit(tensors)
  save_file(tensors, f, metadata={"format": "pt"})


def _load(path):
  return distil_jax.from_pretrained(path, dtype=jnp.float32)


def test_missing_tensor_is_named(ckpt):
  _rewrite(ckpt, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(
      CheckpointError, match=r"missing tensors \['model.layers.1.mlp.up_proj.weight'\]"
  ):
    _load(ckpt)


def test_unexpected_tensor_is_named(ckpt):
  _rewrite(ckpt, lambda t: t.update({"model.layers.0.extra.weight": np.zeros(3, np.float32)}))
  with pytest.raises(
      CheckpointError, match=r"unexpected tensors \['model.layers.0.extra.weight'\]"
  ):
    _load(ckpt)


def test_shape_mismatch_names_file_tensor_and_shapes(ckpt):
  _rewrite(
      ckpt,
      lambda t: t.update(
          {"model.layers.0.self_attn.k_proj.weight": np.zeros((16, 64), np.float32)}
      ),
  )
  with pytest.raises(
      CheckpointError,
      match=r"model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' has shape \(16, 64\), expected \(32, 64\)",
  ):
    _load(ckpt)


def test_integer_tensor_is_a_dtype_error(ckpt):
  _rewrite(ckpt, lambda t: t.update({"model.norm.weight": np.ones(64, np.int32)}))
  with pytest.raises(CheckpointError, match=r"tensor 'model.norm.weight' has dtype int32"):
    _load(ckpt)


def test_model_type_other_than_qwen2_is_refused(ckpt):
  cfg_path = os.path.join(ckpt, "config.json")
  cfg = json.load(open(cfg_path))
  cfg["model_type"] = "llama"
  json.dump(cfg, open(cfg_path, "w"))
  with pytest.raises(
      CheckpointError, match=r"config.json: model_type is 'llama', expected 'qwen2'"
  ):
    _load(ckpt)


def test_header_length_beyond_the_file_names_the_file(ckpt):
  with open(os.path.join(ckpt, "model.safetensors"), "r+b") as fh:
    fh.write(struct.pack("<Q", 10**12))
  with pytest.raises(CheckpointError, match=r"model.safetensors: corrupt safetensors header"):
    _load(ckpt)


def test_garbled_header_json_names_the_file(ckpt):
  with open(os.path.join(ckpt, "model.safetensors"), "r+b") as fh:
    fh.seek(8)
    fh.write(b"{not json")
  with pytest.raises(CheckpointError, match=r"model.safetensors: corrupt safetensors header"):
    _load(ckpt)


def test_shards_without_index_are_refused(ckpt):
  os.rename(
      os.path.join(ckpt, "model.safetensors"),
      os.path.join(ckpt, "model-00001-of-00002.safetensors"),
  )
  with pytest.raises(
      CheckpointError, match=r"safetensors shards but no model.safetensors.index.json"
  ):
    _load(ckpt)


def test_index_naming_a_missing_shard_is_refused(ckpt):
  names = list(load_file(os.path.join(ckpt, "model.safetensors")))
  json.dump(
      {"weight_map": {n: "model-00002-of-00002.safetensors" for n in names}},
      open(os.path.join(ckpt, "model.safetensors.index.json"), "w"),
  )
  with pytest.raises(
      CheckpointError, match=r"lists model-00002-of-00002.safetensors, which is missing"
  ):
    _load(ckpt)


def test_no_config_json(ckpt):
  os.remove(os.path.join(ckpt, "config.json"))
  with pytest.raises(CheckpointError, match=r"no config.json"):
    _load(ckpt)


def test_failed_export_leaves_no_directory(good, tmp_path, monkeypatch):
  model = _load(good)
  import distil_jax.hf.export as export

  def broken_writer(path, specs, arrays, metadata=None):
    next(iter(arrays))
    raise OSError("disk full")

  monkeypatch.setattr(export, "write_safetensors", broken_writer)
  target = tmp_path / "out"
  with pytest.raises(OSError, match="disk full"):
    distil_jax.save_pretrained(model, str(target), tokenizer=False)
  assert os.listdir(tmp_path) == []
