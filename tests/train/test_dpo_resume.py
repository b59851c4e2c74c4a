"""`distil-jax train` with the DPO config resumes bit-exactly after kill -9: the same parameters
as a run that was never interrupted (the pair iterator's position is checkpointed too)."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from distil_jax import cli
from distil_jax.model import ModelConfig, create_model
from distil_jax.pairs.reference import compute_reference_logprobs
from distil_jax.pairs.tokenize import write_tokenized_pairs
from distil_jax.sharding import MeshConfig, make_mesh
from test_dpo import synthetic_pairs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _args(root, workdir, steps):
  return [
      "train",
      "--config",
      "configs/dpo/tiny.py",
      "--workdir",
      str(workdir),
      f"--config.data.path={root / 'pairs'}",
      f"--config.loss.reference_logprobs={root / 'ref'}",
      "--config.model.vocab_size=64",
      "--config.data.seq_len=32",
      "--config.data.batch_size=8",
      f"--config.steps={steps}",
      "--config.checkpoint.every_steps=1",
      "--config.checkpoint.async_save=False",
      "--config.log_every=1",
      "--no_progress",
  ]


def _params(workdir):
  from flax import nnx
  from distil_jax.loading import open_model

  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(open_model(str(workdir))))]


@pytest.mark.slow  # three training processes of a tiny model
def test_dpo_run_resumes_bit_exactly_after_kill_9(tmp_path):
  write_tokenized_pairs(tmp_path / "pairs", synthetic_pairs(24), shard_size=8)
  mesh = make_mesh(MeshConfig(data=1), jax.devices()[:1])
  compute_reference_logprobs(
      create_model(ModelConfig.tiny(vocab_size=64), mesh, seed=0),
      mesh,
      tmp_path / "pairs",
      tmp_path / "ref",
      model_name="seed-0",
      batch_size=4,
      chunk=16,
      log=lambda _: None,
  )
  straight = tmp_path / "straight"
  assert cli.main(_args(tmp_path, straight, 4)) == 0

  killed = tmp_path / "killed"
  proc = subprocess.Popen(
      [sys.executable, "-m", "distil_jax.cli", *_args(tmp_path, killed, 4)],
      cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 300
  try:
    while time.time() < deadline and proc.poll() is None:
      if (killed / "checkpoints" / "2").is_dir():
        proc.send_signal(signal.SIGKILL)
        break
      time.sleep(0.01)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  assert cli.main(_args(tmp_path, killed, 4)) == 0
  for a, b in zip(_params(killed), _params(straight), strict=True):
    np.testing.assert_array_equal(a, b)
