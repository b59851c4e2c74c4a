"""Length: on pairs whose chosen answer is always longer than the rejected one, how far do plain
sigmoid DPO and length-normalised DPO move the student's greedy answer length?

Measured (docs/dpo.md; 64 training prompts, 64 held-out, seeds 0/1/2): both variants reach reward
accuracy 1.0 and both lengthen the answers, but plain DPO stops near the chosen answers' length
(mean 9.6 new tokens + EOS) while the length-normalised loss, which weights each token of the short
rejected answer (its early EOS included) by 1/|y_l| against 1/|y_w| for the chosen, overshoots:
greedy length from 1.8 to 11.4 (plain) vs 17.7 (normalised), seed 0. So plain DPO leaves the
answers shorter than the normalised variant does: the assertion below.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from distil_jax.generate import Generator
from distil_jax.model import ModelConfig, create_model
from distil_jax.pairs.tokenize import side_features
from distil_jax.sharding import MeshConfig, make_mesh, use_mesh
from distil_jax.train.dpo import DPOLoss
from distil_jax.train.dpo_losses import DPOObjective
from distil_jax.train.losses import SFTLoss
from distil_jax.train.objective import apply_loss

VOCAB, EOS, SEQ, MAX_NEW = 64, 1, 32, 20
GOOD, BAD = (2, 33), (33, 64)  # the chosen answers use the first half of the vocabulary
MODEL = ModelConfig.tiny(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    max_position_embeddings=64,
)


def _rows(examples):
  feats = [
      side_features(
          np.concatenate([p, a]).astype(np.int32),
          (np.arange(len(p) + len(a)) >= len(p)).astype(np.uint8),
          SEQ,
      )
      for p, a in examples
  ]
  return {k: jnp.asarray(np.stack([f[k] for f in feats])) for k in feats[0]}


def _fit(model, loss, batch_of_step, steps, lr, mesh, frozen=None):
  graphdef, params = nnx.split(model)
  tx = optax.adam(lr)

  @jax.jit
  def step(params, opt, batch):
    def objective(p):
      value, sums, counts = apply_loss(loss, nnx.merge(graphdef, p), batch, frozen=frozen)
      return value, (sums, counts)

    (_, (sums, counts)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, sums, counts

  opt = tx.init(params)
  with use_mesh(mesh):
    for i in range(steps):
      params, opt, sums, counts = step(params, opt, batch_of_step(i))
  return nnx.merge(graphdef, params), sums, counts


def _greedy_length(model, prompts):
  out = Generator(model, stop_ids=[EOS]).generate(
      [list(map(int, p)) for p in prompts], max_new_tokens=MAX_NEW
  )
  return float(np.mean([len(c.tokens) for c in out]))


@pytest.mark.slow  # ~1 min of CPU: a short SFT, then 2 x 40 DPO steps and greedy decoding
def test_plain_dpo_leaves_answers_shorter_than_length_normalised_dpo_when_chosen_are_longer():
  mesh = make_mesh(MeshConfig(data=1), jax.devices()[:1])
  rng = np.random.default_rng(0)
  prompts = [rng.integers(2, VOCAB, 4) for _ in range(128)]
  train_prompts, held_out = prompts[:64], prompts[64:]

  def answer(lo, hi, vocab=(2, VOCAB)):
    return np.append(rng.integers(*vocab, rng.integers(lo, hi + 1)), EOS)

  # The student before DPO: SFT on answers of 2-12 tokens, so it has learnt to stop.
  sft = [(p, answer(2, 12)) for p in prompts for _ in range(4)]
  student, _, _ = _fit(
      create_model(MODEL, mesh, seed=0),
      SFTLoss(chunk=16),
      lambda i: _rows([sft[j] for j in np.random.default_rng(i).choice(len(sft), 32)]),
      150,
      3e-3,
      mesh,
  )
  # Pairs: chosen 8-12 "good" tokens, rejected 2-4 "bad" ones; every chosen is longer.
  pairs = [(p, answer(8, 12, GOOD), answer(2, 4, BAD)) for p in train_prompts]
  assert all(len(c) > len(r) for _, c, r in pairs)

  def pair_batch(i):
    picked = np.random.default_rng(100 + i).choice(len(pairs), 16, replace=False)
    chosen = _rows([(pairs[j][0], pairs[j][1]) for j in picked])
    rejected = _rows([(pairs[j][0], pairs[j][2]) for j in picked])
    return {
        **{f"chosen_{k}": v for k, v in chosen.items()},
        **{f"rejected_{k}": v for k, v in rejected.items()},
    }

  before = _greedy_length(student, train_prompts)
  graphdef, state = nnx.split(student)
  lengths = {}
  for variant in ("sigmoid", "length_normalised"):
    policy = nnx.merge(graphdef, jax.tree.map(jnp.copy, state))
    loss = DPOLoss(objective=DPOObjective(kind=variant, beta=0.1), online_reference=True, chunk=16)
    policy, sums, counts = _fit(
        policy, loss, pair_batch, 40, 1e-3, mesh, frozen={"reference": student}
    )
    assert float(sums["reward_accuracy"] / counts["pairs"]) > 0.9
    lengths[variant] = (_greedy_length(policy, train_prompts), _greedy_length(policy, held_out))
  print(f"greedy length before DPO {before:.2f}; after (training prompts, held-out): {lengths}")
  assert lengths["sigmoid"][0] < lengths["length_normalised"][0]
  assert lengths["sigmoid"][1] < lengths["length_normalised"][1]
