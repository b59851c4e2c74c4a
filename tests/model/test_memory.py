"""Importing a >= 1 GB HF checkpoint holds one tensor at a time on the host, not the model twice."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from distil_jax.hf.mapping import entries
from distil_jax.hf.safetensors_io import write_safetensors
from distil_jax.model import ModelConfig

pytestmark = pytest.mark.slow

# 271M float32 parameters = 1.08 GB; the largest tensor (embedding / LM head) is 131 MB.
CFG = ModelConfig(
    vocab_size=32000,
    hidden_size=1024,
    intermediate_size=4096,
    num_layers=14,
    num_heads=16,
    num_kv_heads=4,
    head_dim=64,
    tie_word_embeddings=False,
)

_MEASURE = """
import json, resource, sys, os
os.environ["JAX_PLATFORMS"] = "cpu"
from distil_jax.loading import open_model as from_pretrained
model = from_pretrained(sys.argv[1])
print(json.dumps({"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _write_checkpoint(path):
  os.makedirs(path)
  hf = CFG.to_hf(bos_token_id=None, eos_token_id=None)
  json.dump(hf, open(os.path.join(path, "config.json"), "w"))
  rng = np.random.default_rng(0)
  specs, largest = [], 0
  for e in entries(CFG):
    shape = _hf_shape(e)
    specs.append((e.name, shape, np.dtype(np.float32)))
    largest = max(largest, 4 * int(np.prod(shape)))
  arrays = (rng.standard_normal(shape, np.float32) * 0.02 for _, shape, _ in specs)
  write_safetensors(os.path.join(path, "model.safetensors"), specs, arrays)
  return sum(4 * int(np.prod(s)) for _, s, _ in specs), largest


def _hf_shape(e):
  from distil_jax.model.qwen2 import layer_param_specs

  if e.layer is not None:
    return e.rule.hf_shape(layer_param_specs(CFG)[e.rule.ours.split(".")[1]].shape)
  d, v = CFG.hidden_size, CFG.vocab_size
  return {"embed": (v, d), "final_norm": (d,), "lm_head": (v, d)}[e.rule.ours]


def _import_peak(src):
  out = subprocess.run(
      [sys.executable, "-c", _MEASURE, src], capture_output=True, text=True, check=True
  )
  return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss"]


def test_import_peak_memory_is_model_plus_about_one_tensor(tmp_path):
  total, largest = _write_checkpoint(str(tmp_path / "big"))
  assert total >= 1_000_000_000
  small_cfg_dir = str(tmp_path / "small")
  from distil_jax.testing.hf_models import make_hf_checkpoint

  make_hf_checkpoint(small_cfg_dir)
  baseline = _import_peak(small_cfg_dir)
  peak = _import_peak(str(tmp_path / "big"))
  extra = peak - baseline - total
  print(
      f"checkpoint {total / 1e9:.2f} GB, largest tensor {largest / 1e6:.0f} MB, "
      f"baseline {baseline / 1e9:.2f} GB, peak {peak / 1e9:.2f} GB, "
      f"beyond the model itself {extra / 1e6:.0f} MB"
  )
  # On CPU the sharded parameters live in host memory, so the model itself (1.08 GB) is
  # resident; everything beyond it must stay within a few tensors, far below a second
  # copy of the model (a load-everything-then-convert path needs >= 2x the checkpoint).
  assert extra <= 3 * largest, (extra, largest)
