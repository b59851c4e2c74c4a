"""The demo's world: deterministic, held-out prompts unseen in training, references the rule and
the project's IFEval checkers accept, and wrong answers rejected."""

import json

import pytest

from distil_jax.demo import world
from distil_jax.eval import ifeval


@pytest.fixture(scope="module")
def split():
  return world.generate(seed=3, n_train=600, n_heldout=80)


def test_same_seed_same_world_other_seed_other_world(split):
  again = world.generate(seed=3, n_train=600, n_heldout=80)
  assert again == split
  other = world.generate(seed=4, n_train=600, n_heldout=80)
  assert [e.prompt for e in other[0]] != [e.prompt for e in split[0]]


def test_heldout_prompts_never_seen_in_training(split):
  train, heldout = split
  assert len(train) == 600 and len(heldout) == 80
  train_questions = {e.prompt.split("?")[0].split(".")[0] for e in train}
  for e in heldout:
    assert e.prompt.split("?")[0].split(".")[0] not in train_questions, e.prompt
  assert len({e.prompt for e in heldout}) == len(heldout)
  assert {e.task for e in heldout} == set(world.TASKS)
  assert {e.fmt for e in heldout} == set(world.FORMATS)


def test_reference_answers_are_correct_by_the_rule(split):
  for e in split[0] + split[1]:
    assert world.is_correct(e.ifeval(), e.answer), e
  row = next(e for e in split[1] if e.task == "add").ifeval()
  a, b = map(int, row["prompt"].removeprefix("What is ").split("?")[0].split(" + "))
  assert row["content"] == str(a + b)


@pytest.mark.parametrize(
    "fmt,good,bad",
    [
        ("plain", "7", "8"),
        ("json", '{"answer": "7"}', '{"answer": "8"}'),
        ("quotes", '"7"', '"77"'),
        ("bullet", "* 7", "* 17"),
        ("end", "7 Done.", "Done."),
        ("lowercase", "the answer is 7", "the answer is seven"),
    ],
)
def test_rule_accepts_the_content_and_rejects_a_wrong_one(fmt, good, bad):
  row = {"format": fmt, "content": "7"}
  assert world.is_correct(row, good)
  assert not world.is_correct(row, bad)


def test_upper_is_case_sensitive():
  row = {"format": "plain", "content": "CAT"}
  assert world.is_correct(row, " CAT ")
  assert not world.is_correct(row, "cat")


def test_formatting_prompts_scored_by_the_eval_checkers(tmp_path, split):
  path = tmp_path / "heldout.jsonl"
  world.write_jsonl(str(path), [e.ifeval() for e in split[1]])
  prompts = ifeval.read_prompts(str(path))  # the project's reader accepts the file unchanged
  summary, _ = ifeval.aggregate(prompts, [e.answer for e in split[1]])
  assert summary["prompt_level_strict_acc"] == 1.0
  unformatted = [e.content for e in split[1]]
  summary, rows = ifeval.aggregate(prompts, unformatted)
  for e, row in zip(split[1], rows):
    if e.fmt in ("plain", "quotes", "bullet", "end"):  # a bare "7" is JSON, "tac" is lowercase
      assert all(row["strict"]) == (e.fmt == "plain"), (e, row)


def test_chat_rows_are_one_user_turn_and_the_reference(split):
  row = split[0][0].chat()
  assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
  assert row["messages"][1]["content"] == split[0][0].answer
  json.dumps(row)
