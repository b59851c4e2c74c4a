"""The train step and loop: accumulation is exact, layouts agree, a NaN stops the run unsaved."""

import json
import os

import jax
import numpy as np
import pytest

from distil_jax.sharding import MeshConfig, make_mesh
from distil_jax.train import NonFiniteError, train
from distil_jax.train.config import CheckpointConfig
from synthetic import batches_for, tiny_train_config

NO_SAVES = CheckpointConfig(every_steps=1000, keep=1, async_save=True)


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["loss"] for line in f]


def _one_device():
  return make_mesh(MeshConfig(data=1), jax.devices()[:1])


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
  results = {}
  for accum in (1, 4):
    cfg = tiny_train_config(grad_accum=accum, checkpoint=NO_SAVES)
    results[accum] = train(
        cfg, str(tmp_path / f"accum{accum}"), batches_for(cfg), mesh=_one_device(), progress=False
    )
  np.testing.assert_allclose(_losses(tmp_path / "accum4"), _losses(tmp_path / "accum1"), rtol=1e-5)
  # Six AdamW steps of lr 3e-3 from the same start: float32 summation-order noise stays
  # below 1e-5 absolute (under 1% of one update).
  for a, b in zip(
      jax.tree.leaves(results[4].state.params), jax.tree.leaves(results[1].state.params)
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# Data-parallel, FSDP and tensor-parallel runs see the same global batches as one device: the
# loss curves agree to float32 reduction-order noise (stated tolerance: 2e-5 relative).
LAYOUTS = {
    "data": MeshConfig(data=8),
    "fsdp": MeshConfig(data=2, fsdp=4),
    "tensor": MeshConfig(data=4, tensor=2),
}


def test_sharded_layouts_follow_the_single_device_loss_curve(tmp_path):
  cfg = tiny_train_config(checkpoint=NO_SAVES)
  train(cfg, str(tmp_path / "one"), batches_for(cfg), mesh=_one_device(), progress=False)
  reference = _losses(tmp_path / "one")
  assert reference[-1] < reference[0] - 0.05  # it learns
  for name, mesh_cfg in LAYOUTS.items():
    result = train(
        cfg, str(tmp_path / name), batches_for(cfg), mesh=make_mesh(mesh_cfg), progress=False
    )
    np.testing.assert_allclose(_losses(tmp_path / name), reference, rtol=2e-5, err_msg=name)
    embed = jax.tree.leaves(result.state.params)[0]
    assert len(embed.sharding.device_set) == 8


class _PoisonAt:
  """Yields the synthetic stream, with a NaN loss mask in batch `index`."""

  def __init__(self, inner, index):
    self.inner, self.index = inner, index

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self.inner)
    if self.inner.index - 1 == self.index:
      batch["loss_mask"] = batch["loss_mask"] * np.nan
    return batch

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_saves_nothing_broken(tmp_path):
  cfg = tiny_train_config(checkpoint=CheckpointConfig(every_steps=2, keep=5, async_save=True))
  with pytest.raises(NonFiniteError, match=r"step 4: loss is nan"):
    train(
        cfg, str(tmp_path), _PoisonAt(batches_for(cfg), index=3), mesh=_one_device(), progress=False
    )
  saved = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert saved == [2]


class _Finite:
  """The synthetic stream, ending after `count` batches (a finite `data.num_epochs`)."""

  def __init__(self, inner, count):
    self.inner, self.count = inner, count

  def __iter__(self):
    return self

  def __next__(self):
    if self.inner.index >= self.count:
      raise StopIteration
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


def test_data_running_out_before_the_last_step_saves_and_stops_cleanly(tmp_path):
  cfg = tiny_train_config(checkpoint=CheckpointConfig(every_steps=2, keep=5, async_save=True))
  result = train(
      cfg, str(tmp_path), _Finite(batches_for(cfg), count=3), mesh=_one_device(), progress=False
  )
  assert (result.step, result.data_exhausted, result.preempted) == (3, True, False)
  assert [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")] == [1, 2, 3]
  saved = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert saved == [2, 3]
  # Resuming with no data left neither crashes nor tries to save step 3 again.
  again = train(
      cfg, str(tmp_path), _Finite(batches_for(cfg), count=3), mesh=_one_device(), progress=False
  )
  assert (again.step, again.data_exhausted) == (3, True)
