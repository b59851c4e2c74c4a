"""`make-pairs`: the teacher's answer against the student's own greedy answer, duplicates dropped,
provenance recorded, resumable; and the pair format it shares with curation."""

import json

import pytest

from distil_jax.cli import main
from distil_jax.commands.make_pairs import make_answer
from distil_jax.generate import GREEDY, Generator, stop_ids_for
from distil_jax.pairs import build, format as pair_format

PROMPTS = [
    "Name a prime number.",
    "What is distillation?",
    "Say hi.",
    "Count to three.",
    "Why is the sky blue?",
]
MAX_NEW = 6


def _chat(i, question, answer, scores=None):
  record = {
      "id": f"q{i}",
      "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
  }
  if scores is not None:
    record["lineage"] = {"scores": scores}
  return record


@pytest.fixture(scope="module")
def answer(student):
  model, tokenizer = student
  generator = Generator(model, stop_ids=stop_ids_for(tokenizer))
  return make_answer(generator, tokenizer, sampling=GREEDY, max_new_tokens=MAX_NEW, batch_size=4)


@pytest.fixture(scope="module")
def greedy(answer):
  """The student's own greedy answer to each prompt (what make-pairs must put on the rejected side)."""
  return [
      text for text, _, _ in answer([[{"role": "user", "content": p}] for p in PROMPTS], [0] * 5)
  ]


def test_near_duplicate_rule():
  assert pair_format.is_near_duplicate("The answer is 42.", "  the ANSWER is\n42. ")
  long = (
      "Distillation trains a small student on the answers of a large teacher model, token by token"
  )
  assert pair_format.is_near_duplicate(long + ".", long + "!", 0.9)
  assert not pair_format.is_near_duplicate(long, long[:40], 0.9)
  assert not pair_format.is_near_duplicate("The answer is 42.", "I do not know.")


def test_pairs_hold_the_students_own_answer_and_drop_duplicates(tmp_path, answer, greedy):
  records = [
      _chat(
          0,
          PROMPTS[0],
          "Seven is prime.",
          {"judge_score": 8, "student_score": 3, "fit_difficulty": 5},
      ),
      _chat(1, PROMPTS[1], greedy[1]),  # the teacher said what the student says
      _chat(2, PROMPTS[2], greedy[2] + "."),  # one character more: a near-duplicate
      _chat(3, PROMPTS[3], "One, two, three."),
      {"id": "q4", "messages": [{"role": "user", "content": "no answer"}]},
  ]
  src = tmp_path / "chats.jsonl"
  src.write_text("".join(json.dumps(r) + "\n" for r in records))
  settings = {
      "student": "tiny",
      "seed": 0,
      "sampling": {"temperature": 0.0, "max_new_tokens": MAX_NEW},
  }
  manifest = build.build_pairs(
      [src], tmp_path / "pairs", answer=answer, settings=settings, shard_size=2, log=lambda _: None
  )
  pairs = pair_format.read_pairs(tmp_path / "pairs" / "pairs-00000.jsonl") + pair_format.read_pairs(
      tmp_path / "pairs" / "pairs-00001.jsonl"
  )
  assert [p["id"] for p in pairs] == ["q0", "q3"]
  assert pairs[0]["rejected"] == greedy[0] and pairs[1]["rejected"] == greedy[3]
  assert pairs[0]["chosen"] == "Seven is prime."
  assert pairs[0]["prompt"] == [{"role": "user", "content": PROMPTS[0]}]
  prov = pairs[0]["provenance"]
  assert prov["prompt_id"] == "q0" and prov["student"] == "tiny" and prov["source"] == "make-pairs"
  assert prov["scores"] == {"teacher_score": 8.0, "student_score": 3.0, "margin": 5.0}
  assert prov["sampling"]["temperature"] == 0.0 and prov["sampling"]["seed"] == build.row_seed(
      0, "q0"
  )
  assert manifest["totals"]["dropped"] == {"identical": 1, "near_duplicate": 1}
  assert manifest["read"] == {"no_teacher_answer": 1} and manifest["complete"]
  assert 1 <= prov["rejected_tokens"] <= MAX_NEW and prov["finish_reason"] in ("stop", "length")
  assert 0 < manifest["totals"]["student_mean_tokens"] <= MAX_NEW

  # --min_margin keeps only pairs whose judge margin reaches it; unscored pairs cannot.
  kept = build.build_pairs(
      [src],
      tmp_path / "margin",
      answer=answer,
      settings=settings,
      min_margin=4.0,
      log=lambda _: None,
  )
  assert kept["totals"]["pairs"] == 1 and kept["totals"]["dropped"]["no_margin"] == 1


def test_a_rerun_resumes_and_refuses_other_settings(tmp_path, answer):
  src = tmp_path / "chats.jsonl"
  src.write_text(
      "".join(json.dumps(_chat(i, p, f"Teacher answer {i}.")) + "\n" for i, p in enumerate(PROMPTS))
  )
  settings = {"student": "tiny", "seed": 0, "sampling": {}}
  out = tmp_path / "pairs"
  build.build_pairs([src], out, answer=answer, settings=settings, shard_size=2, log=lambda _: None)
  first = {p.name: p.read_bytes() for p in out.glob("pairs-*.jsonl")}
  # As after a kill between a shard's rename and the manifest update: the last shard is unlisted.
  manifest = json.loads((out / "manifest.json").read_text())
  del manifest["shards"]["pairs-00002.jsonl"]
  (out / "manifest.json").write_text(json.dumps(manifest))
  redone = []
  build.build_pairs([src], out, answer=answer, settings=settings, shard_size=2, log=redone.append)
  assert len(redone) == 1 and redone[0].startswith("make-pairs: pairs-00002.jsonl")
  assert {p.name: p.read_bytes() for p in out.glob("pairs-*.jsonl")} == first
  with pytest.raises(ValueError, match="other settings"):
    build.build_pairs([src], out, answer=answer, settings={**settings, "seed": 1}, shard_size=2)


def test_make_pairs_command_samples_with_recorded_settings(tmp_path, student_dir):
  src = tmp_path / "chats.jsonl"
  src.write_text(
      "".join(json.dumps(_chat(i, p, f"Teacher answer {i}.")) + "\n" for i, p in enumerate(PROMPTS))
  )
  args = [
      "make-pairs",
      "--student",
      student_dir,
      "--input",
      str(src),
      "--output",
      str(tmp_path / "out"),
      "--max_new_tokens",
      "5",
      "--temperature",
      "0.8",
      "--top_p",
      "0.9",
      "--seed",
      "3",
      "--batch_size",
      "4",
      "--dtype",
      "float32",
  ]
  assert main(args) == 0
  pairs = pair_format.read_pairs(tmp_path / "out" / "pairs-00000.jsonl")
  assert len(pairs) == len(PROMPTS)
  for p in pairs:
    assert p["provenance"]["student"] == student_dir
    assert p["provenance"]["sampling"] == {
        "temperature": 0.8,
        "top_k": 0,
        "top_p": 0.9,
        "max_new_tokens": 5,
        "seed": build.row_seed(3, p["id"]),
    }
  assert not list((tmp_path / "out").glob(".*"))  # no temporary left behind
