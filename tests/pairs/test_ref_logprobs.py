"""Tokenized pairs, the reference model's log-probs (equal to transformers' own), and the pair
iterator that joins them back, checkpointably and loudly."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distil_jax.cli import main
from distil_jax.pairs import format as pair_format
from distil_jax.pairs import tokenize
from distil_jax.pairs.pipeline import PairJoinError, make_pair_iterator
from distil_jax.train.sequence_logprobs import naive_sequence_logprobs, sequence_logprobs

ANSWERS = [
    "Paris is the capital of France.",
    "I think it is Lyon, maybe.",
    "42",
    "Forty-two, since 6 x 7 = 42.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Hot.",
    "Hello!",
    "Hi there, how can I help?",
]


def _pairs(n=8):
  out = []
  for i in range(n):
    prompt = [{"role": "user", "content": f"Question {i}: tell me something."}]
    if i % 3 == 0:  # a multi-turn prompt: its earlier assistant turn is not compared
      prompt = [
          {"role": "system", "content": "Be brief."},
          {"role": "user", "content": "Hi"},
          {"role": "assistant", "content": "Hello."},
      ] + prompt
    out.append(
        pair_format.make_pair(
            pair_id=f"p{i}",
            prompt=prompt,
            chosen=ANSWERS[i % 8] + " " * (i // 8),
            rejected=ANSWERS[(i + 1) % 8],
            source="make-pairs",
            student="s",
            sampling={},
            scores={},
        )
    )
  return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, student_dir):
  root = tmp_path_factory.mktemp("pairs")
  pair_format.write_jsonl_atomically(root / "pairs-00000.jsonl", _pairs())
  assert (
      main(
          [
              "prepare-pairs",
              "--input",
              str(root),
              "--output",
              str(root / "tok"),
              "--tokenizer",
              student_dir,
              "--shard_size",
              "3",
              "--max_length",
              "64",
          ]
      )
      == 0
  )
  assert (
      main(
          [
              "ref-logprobs",
              "--model",
              student_dir,
              "--pairs",
              str(root / "tok"),
              "--output",
              str(root / "ref"),
              "--batch_size",
              "2",
              "--chunk",
              "16",
              "--dtype",
              "float32",
          ]
      )
      == 0
  )
  return root


def test_the_loss_mask_covers_the_answer_and_its_end_token_only(prepared, student):
  _, tokenizer = student
  records = [r for p in tokenize.shard_paths(prepared / "tok") for r in tokenize.read_pair_shard(p)]
  pairs = {p["id"]: p for p in _pairs()}
  assert [r["id"] for r in records] == list(pairs)
  for r in records:
    for side in tokenize.SIDES:
      ids, mask = r[f"{side}_ids"], r[f"{side}_mask"]
      full = tokenizer.apply_chat_template(
          pairs[r["id"]]["prompt"] + [{"role": "assistant", "content": pairs[r["id"]][side]}],
          tokenize=False,
      )
      assert tokenizer.decode(ids) == full  # the real chat template, token for token
      assert tokenizer.decode(ids[mask == 1]) == pairs[r["id"]][side] + "<|im_end|>"


def test_truncation_keeps_the_prompt_and_drops_pairs_without_an_answer_left(tmp_path, student):
  long_answer = " ".join(f"word{i}" for i in range(80))
  pairs = [
      pair_format.make_pair(
          pair_id="long",
          prompt=[{"role": "user", "content": "Go on."}],
          chosen=long_answer,
          rejected="Short.",
          source="make-pairs",
          student="s",
          sampling={},
          scores={},
      ),
      pair_format.make_pair(
          pair_id="prompt-only",
          prompt=[{"role": "user", "content": long_answer}],
          chosen="A.",
          rejected="B.",
          source="make-pairs",
          student="s",
          sampling={},
          scores={},
      ),
  ]
  pair_format.write_jsonl_atomically(tmp_path / "pairs-00000.jsonl", pairs)
  manifest = tokenize.prepare_pairs(
      [tmp_path / "pairs-00000.jsonl"], tmp_path / "tok", tokenizer=student[1], max_length=48
  )
  assert (
      manifest["counts"]["truncated"] == 1 and manifest["counts"]["overlong_no_response_left"] == 1
  )
  (record,) = tokenize.read_pair_shard(tokenize.shard_paths(tmp_path / "tok")[0])
  assert len(record["chosen_ids"]) == 48 and record["chosen_mask"][-1] == 1
  dropped = tokenize.prepare_pairs(
      [tmp_path / "pairs-00000.jsonl"],
      tmp_path / "drop",
      tokenizer=student[1],
      max_length=48,
      overlong="drop",
  )
  assert dropped["counts"]["overlong"] == 2 and dropped["counts"]["pairs"] == 0


def test_chunked_sequence_logprobs_equal_the_full_log_softmax_with_gradients():
  B, L, D, V = 3, 37, 16, 50  # a ragged last chunk
  k = jax.random.split(jax.random.key(0), 4)
  h, w = jax.random.normal(k[0], (B, L, D)), jax.random.normal(k[1], (D, V))
  targets = jax.random.randint(k[2], (B, L), 0, V)
  mask = (jax.random.uniform(k[3], (B, L)) > 0.4).astype(jnp.float32)
  coeff = jnp.array([0.5, -2.0, 1.0])  # a per-row weighting, as DPO's nonlinear outer loss gives

  def chunked(h, w):
    return jnp.sum(coeff * sequence_logprobs(h, w, targets, mask, chunk=8))

  def naive(h, w):
    return jnp.sum(coeff * naive_sequence_logprobs(jnp.einsum("bld,dv->blv", h, w), targets, mask))

  np.testing.assert_allclose(chunked(h, w), naive(h, w), rtol=1e-5)
  for a, b in zip(jax.grad(chunked, (0, 1))(h, w), jax.grad(naive, (0, 1))(h, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_reference_logprobs_equal_transformers(prepared, student_dir):
  import torch
  from transformers import AutoModelForCausalLM

  model = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
  ref = {}
  for path in sorted((prepared / "ref").glob("ref-*.jsonl")):
    for line in path.read_text().splitlines():
      ref[json.loads(line)["id"]] = json.loads(line)
  records = [r for p in tokenize.shard_paths(prepared / "tok") for r in tokenize.read_pair_shard(p)]
  assert sorted(ref) == sorted(r["id"] for r in records)
  for r in records:
    for side in tokenize.SIDES:
      ids, mask = r[f"{side}_ids"], r[f"{side}_mask"]
      with torch.no_grad():
        logp = torch.log_softmax(
            model(torch.tensor(ids[None].astype(np.int64))).logits[0], -1
        ).numpy()
      want = float(np.sum(logp[np.arange(len(ids) - 1), ids[1:]] * mask[1:]))
      np.testing.assert_allclose(ref[r["id"]][f"ref_{side}_logp"], want, rtol=2e-5)
      assert ref[r["id"]][f"{side}_tokens"] == int(mask[1:].sum())
      assert ref[r["id"]]["hash"] == r["hash"]


def test_ref_logprobs_resumes_where_it_stopped(prepared, student_dir, tmp_path):
  import shutil

  shutil.copytree(prepared / "ref", tmp_path / "ref")
  before = (tmp_path / "ref" / "ref-00001.jsonl").read_text()
  (tmp_path / "ref" / "ref-00001.jsonl").unlink()  # as if killed while on the second shard
  stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ref").glob("ref-*.jsonl")}
  # The rerun spreads each batch over 8 devices (rows sharded by the mesh): the same values.
  assert (
      main(
          [
              "ref-logprobs",
              "--model",
              student_dir,
              "--pairs",
              str(prepared / "tok"),
              "--output",
              str(tmp_path / "ref"),
              "--batch_size",
              "4",
              "--chunk",
              "16",
              "--dtype",
              "float32",
              "--mesh",
              "data=8",
          ]
      )
      == 0
  )
  redone = [
      json.loads(line) for line in (tmp_path / "ref" / "ref-00001.jsonl").read_text().splitlines()
  ]
  for got, want in zip(redone, [json.loads(line) for line in before.splitlines()], strict=True):
    assert got["id"] == want["id"] and got["hash"] == want["hash"]
    np.testing.assert_allclose(
        [got["ref_chosen_logp"], got["ref_rejected_logp"]],
        [want["ref_chosen_logp"], want["ref_rejected_logp"]],
        rtol=1e-5,
    )
  assert {n: (tmp_path / "ref" / n).stat().st_mtime_ns for n in stamps} == stamps  # untouched


def test_pair_batches_carry_both_sides_and_the_joined_reference(prepared):
  ref = {}
  for path in sorted((prepared / "ref").glob("ref-*.jsonl")):
    for line in path.read_text().splitlines():
      row = json.loads(line)
      ref[(row["ref_chosen_logp"], row["ref_rejected_logp"])] = row
  it = make_pair_iterator(prepared / "tok", prepared / "ref", seq_len=64, batch_size=4, seed=1)
  batch = next(it)
  for side in tokenize.SIDES:
    for name in tokenize.SIDE_FEATURES:
      assert batch[f"{side}_{name}"].shape == (4, 64)
    assert (
        batch[f"{side}_loss_mask"].dtype == np.float32
        and batch[f"{side}_input_ids"].dtype == np.int32
    )
  assert batch["ref_chosen_logp"].dtype == np.float32 and batch["ref_chosen_logp"].shape == (4,)
  for i in range(4):
    row = ref[(float(batch["ref_chosen_logp"][i]), float(batch["ref_rejected_logp"][i]))]
    assert batch["chosen_loss_mask"][i].sum() == row["chosen_tokens"]
    assert batch["rejected_loss_mask"][i].sum() == row["rejected_tokens"]

  state = it.get_state()
  ahead = [next(it) for _ in range(3)]
  resumed = make_pair_iterator(prepared / "tok", prepared / "ref", seq_len=64, batch_size=4, seed=1)
  resumed.set_state(json.loads(json.dumps(state)))
  for want in ahead:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_reference_logprobs_of_other_tokens_are_refused(prepared, tmp_path, student):
  import shutil

  shutil.copytree(prepared / "ref", tmp_path / "ref")
  # Other pairs (one answer edited) under the same ids: the fingerprint no longer matches.
  pairs = _pairs()
  pairs[2]["chosen"] += " Edited."
  pair_format.write_jsonl_atomically(tmp_path / "pairs-00000.jsonl", pairs)
  tokenize.prepare_pairs(
      [tmp_path], tmp_path / "tok", tokenizer=student[1], max_length=64, shard_size=3
  )
  with pytest.raises(ValueError, match="fingerprint"):
    make_pair_iterator(tmp_path / "tok", tmp_path / "ref", seq_len=64, batch_size=2)
  # A hand-edited reference row: the per-pair hash check stops the batch that holds it.
  manifest = json.loads((tmp_path / "ref" / "manifest.json").read_text())
  manifest["run"]["pairs_fingerprint"] = tokenize.read_manifest(tmp_path / "tok")["fingerprint"]
  (tmp_path / "ref" / "manifest.json").write_text(json.dumps(manifest))
  it = make_pair_iterator(
      tmp_path / "tok", tmp_path / "ref", seq_len=64, batch_size=8, shuffle=False
  )
  with pytest.raises(PairJoinError, match="'p2'.*rerun ref-logprobs"):
    next(it)
