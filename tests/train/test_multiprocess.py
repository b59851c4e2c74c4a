"""Two JAX processes on localhost (gloo collectives, 2 CPU devices each) train, save, resume:
the same code path as a GPU cluster or a TPU pod."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import portpicker
import pytest

from distil_jax.sharding import MeshConfig, make_mesh
from distil_jax.train import train
from distil_jax.train.config import CheckpointConfig
from synthetic import SyntheticBatches, tiny_train_config

HERE = os.path.dirname(__file__)


def _run_two_processes(workdir, steps):
  port = portpicker.pick_unused_port()
  env = dict(
      os.environ,
      XLA_FLAGS="--xla_force_host_platform_device_count=2",
      JAX_PLATFORMS="cpu",
      JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
  )
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              os.path.join(HERE, "worker.py"),
              str(workdir),
              str(steps),
              str(i),
              "2",
              str(port),
          ],
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=300)
    finally:
      for q in procs:
        q.kill()
    assert p.returncode == 0, err[-3000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  return outs


class _GlobalBatches:
  """Both processes' shares side by side: what one process with 4 devices would see."""

  def __init__(self, cfg):
    self.parts = [
        SyntheticBatches(
            batch_size=cfg.data.batch_size,
            seq_len=cfg.data.seq_len,
            vocab_size=cfg.model.vocab_size,
            process_index=i,
            process_count=2,
        )
        for i in range(2)
    ]

  def __iter__(self):
    return self

  def __next__(self):
    parts = [next(p) for p in self.parts]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self):
    return [p.get_state() for p in self.parts]

  def set_state(self, state):
    for p, s in zip(self.parts, state):
      p.set_state(s)


def test_two_processes_train_checkpoint_and_resume(tmp_path):
  first = _run_two_processes(tmp_path / "mp", steps=3)
  assert [o["step"] for o in first] == [3, 3]
  assert os.path.isdir(tmp_path / "mp" / "checkpoints" / "3")
  assert first[0]["checksum"] == first[1]["checksum"]  # one model, not two

  cfg = tiny_train_config(
      steps=3, checkpoint=CheckpointConfig(every_steps=100, keep=1, async_save=True)
  )
  one = train(
      cfg,
      str(tmp_path / "single"),
      _GlobalBatches(cfg),
      mesh=make_mesh(MeshConfig(data=4), jax.devices()[:4]),
      progress=False,
  )
  np.testing.assert_allclose(first[0]["loss"], one.last_metrics["loss"], rtol=1e-5)

  resumed = _run_two_processes(tmp_path / "mp", steps=5)
  assert [o["step"] for o in resumed] == [5, 5]
  assert [o["data_index"] for o in resumed] == [5, 5]  # each restored its own stream at 3
  assert resumed[0]["checksum"] == resumed[1]["checksum"]


def test_sigterm_to_one_process_stops_both_at_the_same_step_after_saving(tmp_path):
  """A preemption notice reaches one host; JAX's preemption sync makes every process save the
  same step and exit 0, and the run resumes from it."""
  workdir = tmp_path / "preempt"
  port = portpicker.pick_unused_port()
  env = dict(
      os.environ,
      XLA_FLAGS="--xla_force_host_platform_device_count=2",
      JAX_PLATFORMS="cpu",
      JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
  )
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              os.path.join(HERE, "worker.py"),
              str(workdir),
              "100000",
              str(i),
              "2",
              str(port),
          ],
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  try:
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
      assert time.time() < deadline and all(p.poll() is None for p in procs), "never trained"
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    outs = []
    for p in procs:
      out, err = p.communicate(timeout=240)
      assert p.returncode == 0, err[-3000:]
      outs.append(json.loads(out.strip().splitlines()[-1]))
  finally:
    for p in procs:
      p.kill()
  stopped = outs[0]["step"]
  assert [o["step"] for o in outs] == [stopped, stopped] and 3 <= stopped < 100000
  assert os.path.isdir(workdir / "checkpoints" / str(stopped))
  resumed = _run_two_processes(workdir, steps=stopped + 2)
  assert [o["step"] for o in resumed] == [stopped + 2] * 2
  assert [o["data_index"] for o in resumed] == [stopped + 2] * 2


def test_a_failure_on_one_process_stops_every_process_naming_it(tmp_path):
  """Process 1's data raises mid-run while process 0 is already in the next step's collectives.
  Both must exit 1 promptly (not after the coordination service's heartbeat timeout), process 0
  saying which process failed and why; the checkpoint saved before the failure resumes."""
  workdir = tmp_path / "fail"
  port = portpicker.pick_unused_port()
  env = dict(
      os.environ,
      XLA_FLAGS="--xla_force_host_platform_device_count=2",
      JAX_PLATFORMS="cpu",
      JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
      CHECKPOINT_EVERY="2",
      FAIL_AT="1:6",
  )
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              os.path.join(HERE, "worker.py"),
              str(workdir),
              "20",
              str(i),
              "2",
              str(port),
          ],
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  errs = []
  try:
    for p in procs:
      _, err = p.communicate(timeout=90)  # the heartbeat timeout alone would take 100 s
      errs.append(err)
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [1, 1], errs[0][-2000:] + errs[1][-2000:]
  assert "ValueError: corrupt record in batch 6" in errs[1]
  assert "stopping process 0: process 1 failed: ValueError: corrupt record in batch 6" in errs[0]
  saved = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  assert saved and saved[-1] in (2, 4)
  resumed = _run_two_processes(workdir, steps=saved[-1] + 2)
  assert [o["step"] for o in resumed] == [saved[-1] + 2] * 2


def test_fail_fast_with_one_process_lets_the_exception_through():
  from distil_jax.multihost import fail_fast

  with pytest.raises(ValueError, match="bad shard"):
    with fail_fast():
      raise ValueError("bad shard")
