"""`distil-jax bench --hf`: our train step and transformers' timed on the same shape, in one run,
with one FLOPs count, so the ratio it prints compares like with like."""

import json
import math
import os
import subprocess
import sys

import jax
import pytest

from distil_jax.train.config import from_config_dict, load_config
from distil_jax.train.hf_bench import Precision

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERRIDES = ["--config.data.batch_size=2", "--config.data.seq_len=64"]


def test_torch_precision_follows_the_config_dtypes():
  assert Precision.matching("bfloat16", "bfloat16") is Precision.BF16
  assert Precision.matching("float32", "bfloat16") is Precision.AUTOCAST
  assert Precision.matching("float32", "float32") is Precision.FP32


@pytest.mark.slow
def test_bench_hf_times_both_steps_on_the_same_shape_and_flops():
  # One CPU device, as a user's run has: the session's 8 fake devices would share two cores.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir  # conftest's, reused
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "distil_jax.cli",
          "bench",
          "--config",
          "configs/sft/tiny.py",
          *OVERRIDES,
          "--steps",
          "1",
          "--warmup",
          "1",
          "--hf",
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout)
  ours, theirs = result["distil_jax"], result["transformers"]
  cfg = from_config_dict(load_config(os.path.join(ROOT, "configs/sft/tiny.py"), OVERRIDES)).model

  assert ours["tokens_per_s"] > 0 and theirs["tokens_per_s"] > 0
  assert (theirs["batch"], theirs["seq_len"]) == (ours["batch"], ours["seq_len"]) == (2, 64)
  assert theirs["precision"] == "fp32" and theirs["attention"] == "sdpa"  # tiny computes in fp32
  # transformers' model, counted from its own modules, is the one our config describes
  assert theirs["params"] == ours["params"] == cfg.num_params()
  assert theirs["flops_per_token"] == ours["flops_per_token"] == cfg.flops_per_token(64)
  # random init on random tokens: the first loss is that of a uniform guess
  assert math.isfinite(theirs["first_loss"])
  assert abs(theirs["first_loss"] - math.log(cfg.vocab_size)) < 0.1
  assert theirs["peak_memory_gb"] > 0 and theirs["peak_memory_source"]
  assert result["speedup"] == pytest.approx(ours["tokens_per_s"] / theirs["tokens_per_s"])
  # both sides are put against one bf16 matmul ceiling, measured in the same run
  assert ours["ceiling_tflops"] == theirs["ceiling_tflops"] > 0
  for side in (ours, theirs):
    assert side["of_ceiling"] == pytest.approx(side["tflops_per_device"] / side["ceiling_tflops"])
