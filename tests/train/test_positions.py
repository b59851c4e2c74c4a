"""The LM head at the trained positions only (`loss_positions`): the same losses and gradients
as over every position, a [B, K, V] head instead of [B, L, V], and a batch that does not fit is
refused before its step."""

import json

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from distil_jax.model import ModelConfig, create_model
from distil_jax.sharding import MeshConfig, make_mesh
from distil_jax.train import positions as pos
from distil_jax.train import train
from distil_jax.train.config import CheckpointConfig
from distil_jax.train import divergences as dv
from distil_jax.train.dpo import DPOLoss
from distil_jax.train.kd import KDLoss, Source
from distil_jax.train.losses import SFTLoss
from distil_jax.train.objective import apply_loss
from distil_jax.train.sequence_logprobs import sequence_logprobs
from synthetic import SyntheticBatches, batches_for, tiny_train_config

STUDENT = ModelConfig.tiny(compute_dtype=jnp.float32)
TEACHER = ModelConfig.tiny(
    vocab_size=640, hidden_size=96, num_heads=6, num_kv_heads=2, head_dim=16, intermediate_size=192
)


def _mesh():
  return make_mesh(MeshConfig(data=1), jax.devices()[:1])


@pytest.fixture(scope="module")
def models():
  return create_model(STUDENT, _mesh(), seed=1), create_model(TEACHER, _mesh(), seed=2)


@pytest.fixture(scope="module")
def batch():
  """Rows with 0, a few and many trained positions, scattered (not one contiguous run)."""
  b = next(SyntheticBatches(batch_size=4, seq_len=40, vocab_size=STUDENT.vocab_size, seed=5))
  rng = np.random.default_rng(0)
  mask = b["loss_mask"] * (rng.random(b["loss_mask"].shape) < 0.5)
  mask[0] = 0  # a row that trains nothing
  b["loss_mask"] = mask.astype(np.float32)
  return jax.tree.map(jnp.asarray, b)


def _most(batch):
  return int(np.max(np.sum(np.asarray(batch["loss_mask"]) > 0, -1)))


def _value_and_grad(loss, model, batch, frozen=None):
  graphdef, params = nnx.split(model)
  f = lambda p: apply_loss(loss, nnx.merge(graphdef, p), batch, frozen=frozen or {})[0]
  return jax.jit(jax.value_and_grad(f))(params)


def _assert_same(a, b, atol=1e-6):
  """(value, grads) equal up to float32 sums taken in another order."""
  np.testing.assert_allclose(a[0], b[0], rtol=1e-5)
  for x, y in zip(jax.tree.leaves(a[1]), jax.tree.leaves(b[1])):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=atol)


def test_select_finds_each_rows_trained_positions_in_order():
  mask = jnp.array([[0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]], jnp.float32)
  idx, valid = pos.select(mask, 4)
  np.testing.assert_array_equal(np.asarray(valid), [[1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]])
  np.testing.assert_array_equal(np.asarray(idx)[valid > 0], [1, 3, 4, 0, 5])


def test_sft_loss_and_gradients_are_those_of_every_position(models, batch):
  k = _most(batch)
  assert 0 < k < batch["loss_mask"].shape[1] // 2
  full = _value_and_grad(SFTLoss(chunk=16), models[0], batch)
  for positions in (k, k + 3):  # exactly enough, and spare slots
    _assert_same(_value_and_grad(SFTLoss(chunk=16, positions=positions), models[0], batch), full)


def test_online_and_offline_kd_are_those_of_every_position(models, batch):
  student, teacher = models
  k = _most(batch)
  frozen = {"teacher": teacher}
  for extra in (
      dict(source=Source.ONLINE),
      dict(source=Source.ONLINE, online_top_k=5, tail=dv.TailTreatment.RENORMALISE),
  ):
    full = _value_and_grad(
        KDLoss(alpha=0.4, temperature=2.0, chunk=8, **extra), student, batch, frozen
    )
    cut = KDLoss(alpha=0.4, temperature=2.0, chunk=8, positions=k, **extra)
    _assert_same(_value_and_grad(cut, student, batch, frozen), full)
  # offline: random top-k rows stand in for the store (the join writes zeros off the mask)
  rng = np.random.default_rng(1)
  shape = batch["loss_mask"].shape
  logp = np.log(rng.dirichlet(np.ones(6), size=shape)[..., :5])
  offline = dict(
      batch,
      topk_ids=jnp.asarray(rng.integers(0, STUDENT.vocab_size, shape + (5,)), jnp.int32),
      topk_logprobs=jnp.asarray(logp, jnp.float32),
      topk_tail=jnp.asarray(np.log1p(-np.exp(logp).sum(-1)), jnp.float32),
      # a partial store: some trained positions have no teacher distribution
      kd_mask=jnp.asarray(rng.random(shape) < 0.8, jnp.float32),
  )
  full = _value_and_grad(KDLoss(source=Source.OFFLINE, chunk=8), student, offline)
  _assert_same(
      _value_and_grad(KDLoss(source=Source.OFFLINE, chunk=8, positions=k), student, offline), full
  )


def test_sequence_logprobs_and_dpo_are_those_of_every_position(models, batch):
  student = models[0]
  h = jax.random.normal(jax.random.key(0), batch["loss_mask"].shape + (24,))
  w = jax.random.normal(jax.random.key(1), (24, 50))
  t = batch["target_ids"] % 50
  f = lambda h, w, k: jnp.sum(
      jnp.sin(sequence_logprobs(h, w, t, batch["loss_mask"], chunk=8, positions=k))
  )
  full = jax.value_and_grad(f, argnums=(0, 1))(h, w, 0)
  cut = jax.value_and_grad(f, argnums=(0, 1))(h, w, _most(batch))
  _assert_same(full, cut, atol=5e-5)  # dW sums ~90 unit-scale terms
  sides = {}
  for side, shift in (("chosen", 0), ("rejected", 1)):
    for key in ("input_ids", "target_ids", "loss_mask", "segment_ids", "positions"):
      sides[f"{side}_{key}"] = jnp.roll(batch[key], shift, axis=0)
  sides["ref_chosen_logp"] = jnp.zeros(4)
  sides["ref_rejected_logp"] = jnp.ones(4)
  full = _value_and_grad(DPOLoss(chunk=8), student, sides)
  _assert_same(_value_and_grad(DPOLoss(chunk=8, positions=_most(batch)), student, sides), full)


def _head_dots(loss, model, batch):
  """Output shapes of the matmuls that form logits ([rows, positions, vocabulary])."""
  graphdef, params = nnx.split(model)
  jaxpr = jax.make_jaxpr(jax.grad(lambda p: apply_loss(loss, nnx.merge(graphdef, p), batch)[0]))(
      params
  )
  shapes = []

  def walk(j):
    for e in j.eqns:
      shape = e.outvars[0].aval.shape
      if e.primitive.name == "dot_general" and len(shape) == 3 and shape[-1] == STUDENT.vocab_size:
        shapes.append(e.outvars[0].aval.shape)
      for sub in jax.extend.core.jaxprs_in_params(e.params):
        walk(sub)

  walk(jaxpr.jaxpr)
  return shapes


def test_the_lm_head_runs_on_k_positions_a_row_not_the_sequence(models, batch):
  k = _most(batch)
  assert _head_dots(SFTLoss(chunk=64), models[0], batch) == [(4, 40, STUDENT.vocab_size)]
  assert _head_dots(SFTLoss(chunk=64, positions=k), models[0], batch) == [
      (4, k, STUDENT.vocab_size)
  ]


def test_bucket_is_a_power_of_two_at_least_every_row_or_every_position():
  mask = np.zeros((2, 64), np.float32)
  mask[0, 3:8] = 1
  mask[1, 10:21] = 1  # 11 positions
  assert pos.bucket(mask) == 16
  mask[1, :40] = 1
  assert pos.bucket(mask) == 0  # 64 is the whole row: no gather
  assert pos.bucket(np.zeros((2, 64))) == 8


def test_a_row_with_more_trained_positions_than_k_is_refused_before_its_step(tmp_path):
  cfg = tiny_train_config(
      loss_positions=3, checkpoint=CheckpointConfig(every_steps=100, keep=1, async_save=False)
  )
  with pytest.raises(
      ValueError,
      match=r"step 0 has a row with \d+ trained positions in 'loss_mask', more than loss_positions=3",
  ):
    train(cfg, str(tmp_path), batches_for(cfg), mesh=_mesh(), progress=False)
  assert not (tmp_path / "checkpoints").exists() or not any(
      d.isdigit() for d in (p.name for p in (tmp_path / "checkpoints").iterdir())
  )


def test_a_sharded_accumulating_run_with_loss_positions_follows_one_device_without(tmp_path):
  """The gather runs along the sequence of batch-sharded rows, per micro-batch: a 2x2x2 mesh
  with 2 micro-batches and K = 48 gives the one-device, every-position loss curve."""
  saves = CheckpointConfig(every_steps=100, keep=1, async_save=False)
  plain = tiny_train_config(steps=3, checkpoint=saves)
  train(plain, str(tmp_path / "one"), batches_for(plain), mesh=_mesh(), progress=False)
  cut = tiny_train_config(steps=3, checkpoint=saves, loss_positions=48, grad_accum=2)
  mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2), jax.devices()[:8])
  train(cut, str(tmp_path / "mesh"), batches_for(cut), mesh=mesh, progress=False)
  losses = {}
  for name in ("one", "mesh"):
    with open(tmp_path / name / "metrics.jsonl") as f:
      losses[name] = [json.loads(line)["loss"] for line in f]
  np.testing.assert_allclose(losses["mesh"], losses["one"], rtol=2e-5)


def test_a_run_with_loss_positions_follows_the_run_without(tmp_path):
  runs = {}
  for k in (0, 48):  # a synthetic row trains 46 of its 64 positions
    cfg = tiny_train_config(
        loss_positions=k,
        steps=3,
        checkpoint=CheckpointConfig(every_steps=100, keep=1, async_save=False),
    )
    train(cfg, str(tmp_path / str(k)), batches_for(cfg), mesh=_mesh(), progress=False)
    with open(tmp_path / str(k) / "metrics.jsonl") as f:
      runs[k] = [json.loads(line)["loss"] for line in f]
  np.testing.assert_allclose(runs[48], runs[0], rtol=1e-5)


def test_from_manifest_bounds_every_row_packing_can_make():
  chat = {"tokens": {"min": 20, "targets_max": 5}}
  assert pos.from_manifest(chat, 64, None, "m") == 16  # 3 documents x 5 -> 15 -> 16
  assert pos.from_manifest(chat, 64, 2, "m") == 16  # max_segments_per_row 2: 10 -> 16
  assert pos.from_manifest({"tokens": {"min": 2, "targets_max": 3}}, 64, None, "m") == 0  # 96 >= 64
  assert pos.from_manifest({"pairs": 3, "targets_max": 9}, 64, None, "m") == 16
  with pytest.raises(ValueError, match=r"m: the manifest has no targets_max"):
    pos.from_manifest({"tokens": {"min": 4}}, 64, None, "m")


def test_train_command_picks_k_from_the_data_or_refuses_in_one_line(tmp_path, capsys):
  from distil_jax import cli

  with open(tmp_path / "chat.jsonl", "w") as f:
    for i in range(8):
      messages = [
          {"role": "user", "content": f"What is {i} plus {i}?"},
          {"role": "assistant", "content": f"{2 * i}"},
      ]
      f.write(json.dumps({"messages": messages}) + "\n")
  assert (
      cli.main(
          ["prepare", "--input", str(tmp_path / "chat.jsonl"), "--output", str(tmp_path / "d")]
      )
      == 0
  )
  manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
  assert 2 <= manifest["tokens"]["targets_max"] <= 3  # one or two digits, then <|im_end|>
  args = [
      "train",
      "--config",
      "configs/sft/tiny.py",
      f"--config.data.path={tmp_path / 'd'}",
      "--config.data.seq_len=64",
      "--config.data.batch_size=8",
      "--config.steps=1",
      "--config.optim.warmup_steps=1",
      "--no_progress",
  ]
  capsys.readouterr()
  assert cli.main(args + ["--workdir", str(tmp_path / "auto"), "--config.loss_positions=-1"]) == 0
  assert "loss_positions=-1 -> 8 " in capsys.readouterr().err  # one document a row (~30 tokens)
  rc = cli.main(args + ["--workdir", str(tmp_path / "few"), "--config.loss_positions=1"])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1
  assert "trained positions in 'loss_mask', more than loss_positions=1" in err[0]
