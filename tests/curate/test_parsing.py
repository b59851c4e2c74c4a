"""Parsers take what real models return and reject, with a reason, what they cannot trust."""

from __future__ import annotations

from distil_jax.curate.agents import classify, judge
from distil_jax.curate.client import Completion
from distil_jax.curate.parsing import Rejection, extract_int, extract_tag

TASKS = ("math", "code_generation", "writing")


def said(content: str, finish_reason: str = "stop") -> Completion:
  return Completion("k", content, finish_reason, 1, 1)


def test_a_tag_is_found_among_prose_and_inside_a_code_fence():
  assert (
      extract_tag(said("Sure! Here it is:\n<answer>42</answer>\nAnything else?"), "answer") == "42"
  )
  assert (
      extract_tag(said("```xml\n<instruction>Do X.</instruction>\n```"), "instruction") == "Do X."
  )
  assert extract_tag(said("<answer>\n```python\nprint(1)\n```\n</answer>"), "answer") == "print(1)"


def test_code_inside_an_answer_keeps_its_own_fences():
  content = "<answer>Use this:\n```python\nprint(1)\n```\nDone.</answer>"
  assert "```python" in extract_tag(said(content), "answer")


def test_truncated_missing_empty_and_conflicting_payloads_are_rejected():
  assert extract_tag(said("<answer>42</answer>", "length"), "answer") == Rejection("truncated")
  assert extract_tag(said("The answer is 42."), "answer") == Rejection("missing_tag")
  assert extract_tag(said("<answer>  </answer>"), "answer") == Rejection("empty")
  assert extract_tag(said("<answer>1</answer> or <answer>2</answer>"), "answer") == Rejection(
      "ambiguous"
  )
  assert extract_tag(said("<answer>1</answer> again: <answer>1</answer>"), "answer") == "1"


def test_a_verdict_must_be_an_integer_in_range():
  assert extract_int(said("<verdict>1</verdict>"), "verdict", low=0, high=1) == 1
  assert extract_int(said("<verdict>yes</verdict>"), "verdict", low=0, high=1) == Rejection(
      "not_integer"
  )
  assert extract_int(said("<verdict>7</verdict>"), "verdict", low=0, high=1) == Rejection(
      "out_of_range"
  )


def test_classification_outside_the_taxonomy_is_rejected_not_mapped():
  assert classify.parse(said("It is <task>Code Generation</task>."), TASKS) == "code_generation"
  assert classify.parse(said("<task>cooking</task>"), TASKS) == Rejection("unknown_task")


def test_judge_scores_are_read_from_fenced_json_and_checked():
  good = 'Assessment:\n```json\n{"informativeness": 7, "helpfulness": 8, "difficulty": 4, "score": 7}\n```'
  assert judge.parse(said(good)) == {
      "informativeness": 7,
      "helpfulness": 8,
      "difficulty": 4,
      "score": 7,
  }
  assert judge.parse(said('{"score": 7}')) == Rejection("missing_score")
  assert judge.parse(
      said('{"informativeness": 7, "helpfulness": 8, "difficulty": 4, "score": 12}')
  ) == Rejection("out_of_range")
  assert judge.parse(said('{"informativeness": 7, "helpf', "length")) == Rejection("truncated")
  assert judge.parse(said("I would rate it highly.")) == Rejection("bad_json")
