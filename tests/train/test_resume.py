"""Checkpoints: exact resume after a stop signal, restore onto another mesh, kill -9 mid-save."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from distil_jax.sharding import MeshConfig, make_mesh, use_mesh
from distil_jax.train import train
from distil_jax.train.checkpoint import Checkpointer
from distil_jax.train.config import CheckpointConfig
from distil_jax.train.optim import make_optimizer
from distil_jax.train.state import abstract_train_state
from synthetic import batches_for, tiny_train_config

HERE = os.path.dirname(__file__)


class _RecordingBatches:
  """The synthetic stream, remembering which batch indices it served; can SIGTERM itself."""

  def __init__(self, inner, sigterm_at=None):
    self.inner, self.sigterm_at, self.served = inner, sigterm_at, []

  def __iter__(self):
    return self

  def __next__(self):
    self.served.append(self.inner.index)
    if self.inner.index == self.sigterm_at:
      os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-run, like a preemption notice
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


def test_stop_signal_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
  cfg = tiny_train_config(
      steps=6, checkpoint=CheckpointConfig(every_steps=100, keep=2, async_save=True)
  )
  straight = _RecordingBatches(batches_for(cfg))
  full = train(cfg, str(tmp_path / "straight"), straight, progress=False)

  first = _RecordingBatches(batches_for(cfg), sigterm_at=2)
  stopped = train(cfg, str(tmp_path / "resumed"), first, progress=False)
  assert stopped.preempted and stopped.step == 3  # finished the step in flight, then saved
  second = _RecordingBatches(batches_for(cfg))  # a fresh process: the iterator starts at 0
  resumed = train(cfg, str(tmp_path / "resumed"), second, progress=False)

  assert resumed.step == 6 and not resumed.preempted
  assert first.served + second.served == straight.served == list(range(6))
  for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(full.state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_restore_onto_a_different_mesh(tmp_path):
  cfg = tiny_train_config(
      steps=2, checkpoint=CheckpointConfig(every_steps=2, keep=1, async_save=False)
  )
  saved = train(
      cfg, str(tmp_path), batches_for(cfg), mesh=make_mesh(MeshConfig(data=8)), progress=False
  )
  other = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
  tx, _ = make_optimizer(cfg.optim, cfg.steps)
  with use_mesh(other, cfg.rules):
    _, _, target = abstract_train_state(cfg, other, tx)
    ckpt = Checkpointer(str(tmp_path), cfg.checkpoint)
    batches = batches_for(cfg)
    restored = ckpt.restore(2, target, batches)
    ckpt.close()
  assert batches.index == 2
  for got, want, spec in zip(
      jax.tree.leaves(restored), jax.tree.leaves(saved.state), jax.tree.leaves(target)
  ):
    assert got.sharding == spec.sharding
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_kill_9_during_an_async_save_leaves_the_latest_checkpoint_usable(tmp_path):
  """Save every step; SIGKILL the trainer the moment orbax has a step half-written."""
  env = dict(
      os.environ,
      XLA_FLAGS="--xla_force_host_platform_device_count=1",
      CHECKPOINT_EVERY="1",
      JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
  )
  proc = subprocess.Popen(
      [sys.executable, os.path.join(HERE, "worker.py"), str(tmp_path), "500"],
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  ckpt_dir = tmp_path / "checkpoints"
  killed_mid_save = False
  deadline = time.time() + 240
  try:
    while time.time() < deadline and proc.poll() is None:
      names = os.listdir(ckpt_dir) if ckpt_dir.exists() else []
      done = [n for n in names if n.isdigit()]
      if done and any("tmp" in n for n in names):
        proc.send_signal(signal.SIGKILL)
        killed_mid_save = True
        break
      time.sleep(0.005)
  finally:
    proc.kill()
    proc.wait()
  assert killed_mid_save, "never caught a save in progress"
  cfg = tiny_train_config(steps=500)
  ckpt = Checkpointer(str(tmp_path), cfg.checkpoint)
  latest = ckpt.latest_step()
  assert latest is not None
  mesh = make_mesh(MeshConfig(data=1), jax.devices()[:1])
  tx, _ = make_optimizer(cfg.optim, cfg.steps)
  with use_mesh(mesh, cfg.rules):
    _, _, target = abstract_train_state(cfg, mesh, tx)
    batches = batches_for(cfg)
    restored = ckpt.restore(latest, target, batches)  # the next run resumes from here
  ckpt.close()
  assert int(restored.step) == latest == batches.index
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.params))


def test_steps_logged_after_the_last_checkpoint_are_not_logged_twice(tmp_path):
  # A run that logged step 4 but died before its step-4 checkpoint finished resumes from 2.
  cfg = tiny_train_config(
      steps=4, checkpoint=CheckpointConfig(every_steps=2, keep=3, async_save=False)
  )
  train(cfg, str(tmp_path), batches_for(cfg), progress=False)
  shutil.rmtree(tmp_path / "checkpoints" / "4")
  cfg6 = tiny_train_config(steps=6, checkpoint=cfg.checkpoint)
  train(cfg6, str(tmp_path), batches_for(cfg6), progress=False)
  steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
  assert steps == [1, 2, 3, 4, 5, 6]
