"""DPO as a contract loss: the online reference equals the precomputed one, and DPO through the
train loop teaches a tiny student its training pairs (reward accuracy > 0.9)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from distil_jax.model import ModelConfig, create_model
from distil_jax.pairs.pipeline import make_pair_iterator
from distil_jax.pairs.reference import compute_reference_logprobs
from distil_jax.pairs.tokenize import write_tokenized_pairs
from distil_jax.sharding import MeshConfig, make_mesh, use_mesh
from distil_jax.train.config import CheckpointConfig, DataConfig, OptimConfig, Schedule, TrainConfig
from distil_jax.train.dpo import DPOConfig, DPOLoss
from distil_jax.train.dpo_losses import DPOObjective
from distil_jax.train.loop import train
from distil_jax.train.objective import apply_loss

VOCAB, EOS, SEQ = 64, 1, 32
MODEL = ModelConfig.tiny(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    max_position_embeddings=64,
)


def synthetic_pairs(n, seed=0):
  """(id, ids, response mask) x 2 per pair: a random prompt, two random answers ending in EOS."""
  rng = np.random.default_rng(seed)
  for i in range(n):
    prompt = rng.integers(2, VOCAB, rng.integers(4, 9))
    sides = []
    for _ in range(2):
      answer = np.append(rng.integers(2, VOCAB, rng.integers(3, 8)), EOS)
      ids = np.concatenate([prompt, answer]).astype(np.int32)
      sides += [ids, (np.arange(len(ids)) >= len(prompt)).astype(np.uint8)]
    yield (f"pair-{i:03d}", *sides)


@pytest.fixture(scope="module")
def mesh():
  return make_mesh(MeshConfig(data=1), jax.devices()[:1])


@pytest.fixture(scope="module")
def data(tmp_path_factory, mesh):
  """16 tokenized pairs and the log-probs of the seed-0 init (the student's start) on them."""
  root = tmp_path_factory.mktemp("dpo")
  write_tokenized_pairs(root / "pairs", synthetic_pairs(16), shard_size=8)
  reference = create_model(MODEL, mesh, seed=0)
  compute_reference_logprobs(
      reference,
      mesh,
      root / "pairs",
      root / "ref",
      model_name="seed-0",
      batch_size=4,
      chunk=8,
      log=lambda _: None,
  )
  return root, reference


def _all_pairs(root, reference=True):
  it = make_pair_iterator(
      root / "pairs", root / "ref" if reference else None, seq_len=SEQ, batch_size=16, shuffle=False
  )
  return jax.tree.map(jnp.asarray, next(it))


@pytest.mark.parametrize("variant", ["sigmoid", "ipo", "length_normalised"])
def test_precomputed_and_online_reference_give_the_same_loss(data, mesh, variant):
  root, reference = data
  policy = create_model(MODEL, mesh, seed=1)  # a policy away from the reference
  objective = DPOObjective(kind=variant, beta=0.5, sft_weight=0.1)
  batch = _all_pairs(root)
  with use_mesh(mesh):
    pre, pre_sums, counts = apply_loss(DPOLoss(objective=objective, chunk=8), policy, batch)
    online_loss = DPOLoss(objective=objective, chunk=8, online_reference=True)
    assert online_loss.frozen_models == ("reference",)
    assert not any(k.startswith("ref_") for k in online_loss.fields())
    on, on_sums, _ = apply_loss(online_loss, policy, batch, frozen={"reference": reference})
  assert counts["pairs"] == 16
  np.testing.assert_allclose(pre, on, rtol=1e-5)
  for k in pre_sums:
    np.testing.assert_allclose(pre_sums[k], on_sums[k], rtol=1e-4, atol=1e-4)
  # The student at the reference's own weights has zero rewards and a sigmoid loss of log 2.
  with use_mesh(mesh):
    at_ref, sums, _ = apply_loss(
        DPOLoss(objective=DPOObjective(beta=0.5), chunk=8), reference, batch
    )
  np.testing.assert_allclose(at_ref, np.log(2.0), rtol=1e-5)
  assert float(sums["reward_accuracy"]) == 0.0


def test_dpo_through_the_train_loop_learns_its_pairs(data, mesh, tmp_path):
  root, _ = data
  cfg = TrainConfig(
      model=MODEL,
      data=DataConfig(path=str(root / "pairs"), seq_len=SEQ, batch_size=8),
      optim=OptimConfig(lr=3e-3, schedule=Schedule.CONSTANT, warmup_steps=0, min_lr_ratio=1.0),
      checkpoint=CheckpointConfig(every_steps=40, keep=1, async_save=False),
      steps=40,
      loss_chunk=16,
      log_every=10,
      loss=DPOConfig(beta=0.1, reference_logprobs=str(root / "ref")),
  )
  batches = cfg.loss.batches(cfg, shard_index=0, shard_count=1)
  result = train(cfg, str(tmp_path / "run"), batches, mesh=mesh, progress=False)
  assert result.step == 40
  model = nnx.merge(result.graphdef, result.state.params)
  with use_mesh(mesh):
    _, sums, counts = apply_loss(cfg.loss.build(cfg), model, _all_pairs(root))
  accuracy = float(sums["reward_accuracy"] / counts["pairs"])
  assert accuracy > 0.9, accuracy
  logged = [
      json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  ]
  last = logged[-1]
  for key in (
      "reward_accuracy",
      "reward_margin",
      "chosen_reward",
      "rejected_reward",
      "chosen_length",
      "rejected_length",
      "pairs",
  ):
    assert key in last, key
  assert last["reward_margin"] > 0 and last["pairs"] == 8


def test_reference_logprobs_at_the_trained_positions_only_equal_every_position(data, mesh):
  """`ref-logprobs --loss_positions=-1` (the LM head at the response positions, the bound from
  the pairs' manifest) gives the sums of the every-position computation, and a bound too small
  for a row is refused, not truncated."""
  root, reference = data
  kw = dict(model_name="seed-0", batch_size=4, chunk=8, log=lambda _: None)
  compute_reference_logprobs(
      reference, mesh, root / "pairs", root / "ref_cut", loss_positions=-1, **kw
  )
  full = _all_pairs(root)
  cut = next(
      make_pair_iterator(
          root / "pairs", root / "ref_cut", seq_len=SEQ, batch_size=16, shuffle=False
      )
  )
  for side in ("ref_chosen_logp", "ref_rejected_logp"):
    np.testing.assert_allclose(cut[side], full[side], rtol=1e-5)
  with pytest.raises(ValueError, match="more than loss_positions=1"):
    compute_reference_logprobs(
        reference, mesh, root / "pairs", root / "ref_one", loss_positions=1, **kw
    )
