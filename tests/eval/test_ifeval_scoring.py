"""Strict and loose scoring, the aggregates, and the prompt files (ours and the benchmark's format)."""

import collections
import json
import subprocess
import sys

import pytest

from distil_jax.commands.eval import default_prompts
from distil_jax.eval import text
from distil_jax.eval.ifeval import Prompt, aggregate, loose_variants, read_prompts, score_one
from distil_jax.eval.instructions import CHECKERS, make_instruction


def test_loose_tries_the_eight_variants():
  assert loose_variants("Sure!\n**Body**\nBye") == [
      "Sure!\n**Body**\nBye",
      "**Body**\nBye",
      "Sure!\n**Body**",
      "**Body**",
      "Sure!\nBody\nBye",
      "Body\nBye",
      "Sure!\nBody",
      "Body",
  ]


def _prompt(key, *instructions):
  return Prompt(key, "p", tuple(make_instruction(i, k) for i, k in instructions))


def test_strict_and_loose_on_crafted_responses():
  prompts = [
      # A chatty first line breaks "wrap in quotes" strictly; loose drops it.
      _prompt("quote", ("startend:quotation", {})),
      # Markdown bold around the JSON's fence... loose removes the asterisks; both fail strict.
      _prompt(
          "lower+json", ("change_case:english_lowercase", {}), ("detectable_format:json_format", {})
      ),
      # Followed as written: both count it.
      _prompt("comma", ("punctuation:no_comma", {})),
      # Broken whatever is stripped.
      _prompt(
          "words", ("length_constraints:number_words", {"num_words": 50, "relation": "at least"})
      ),
  ]
  responses = [
      'Here is my answer:\n"the whole answer in quotes."',
      '**```json**\n{"colour": "blue", "shape": "round"}\n**```**',
      "No commas at all here.",
      "Too short.",
  ]
  summary, rows = aggregate(prompts, responses)
  assert [r["strict"] for r in rows] == [[False], [True, False], [True], [False]]
  assert [r["loose"] for r in rows] == [[True], [True, True], [True], [False]]
  assert summary["prompt_level_strict_acc"] == pytest.approx(1 / 4)
  assert summary["prompt_level_loose_acc"] == pytest.approx(3 / 4)
  assert summary["inst_level_strict_acc"] == pytest.approx(2 / 5)
  assert summary["inst_level_loose_acc"] == pytest.approx(4 / 5)
  assert summary["per_instruction"]["detectable_format:json_format"] == {
      "count": 1,
      "strict_acc": 0.0,
      "loose_acc": 1.0,
  }
  assert summary["mean_response_words"] == pytest.approx(
      sum(text.count_words(r) for r in responses) / 4
  )


def test_our_prompt_set_covers_all_25_types_in_english_and_chinese():
  prompts = read_prompts(default_prompts())
  assert len(prompts) >= 300
  by_language = collections.Counter(p.language for p in prompts)
  assert set(by_language) == {"en", "zh"} and min(by_language.values()) >= 100
  for language in ("en", "zh"):
    assert {i.id for p in prompts if p.language == language for i in p.instructions} == set(
        CHECKERS
    )
  sizes = collections.Counter(len(p.instructions) for p in prompts)
  assert sizes[1] >= 100 and sizes[2] + sizes[3] >= 100
  assert all(len({i.id for i in p.instructions}) == len(p.instructions) for p in prompts)
  zh = next(p for p in prompts if p.language == "zh")
  assert text.has_cjk(zh.prompt)


def test_our_prompt_set_is_what_the_generator_writes(tmp_path):
  out = tmp_path / "again.jsonl"
  subprocess.run(
      [sys.executable, "tools/make_ifeval_prompts.py", "--output", str(out)],
      check=True,
      capture_output=True,
  )
  with open(default_prompts(), encoding="utf-8") as f:
    assert out.read_text(encoding="utf-8") == f.read()


def test_the_benchmark_format_loads_unchanged(tmp_path):
  # One line as the benchmark's input_data.jsonl writes it (None for unused arguments in some copies).
  path = tmp_path / "input_data.jsonl"
  path.write_text(
      json.dumps(
          {
              "key": 1000,
              "prompt": "Write a 300+ word summary ... Do not use any commas and highlight at least 3 sections.",
              "instruction_id_list": [
                  "punctuation:no_comma",
                  "detectable_format:number_highlighted_sections",
                  "length_constraints:number_words",
              ],
              "kwargs": [
                  {},
                  {"num_highlights": 3},
                  {"relation": "at least", "num_words": 300, "keywords": None},
              ],
          }
      )
      + "\n"
  )
  # The benchmark repeats an id with different arguments (a lower and an upper bound) and uses
  # non-letters as "letters".
  with open(path, "a") as f:
    f.write(
        json.dumps(
            {
                "key": 1040,
                "prompt": "Write a resume ... capital words less than 10 times ... at least once.",
                "instruction_id_list": [
                    "change_case:capital_word_frequency",
                    "change_case:capital_word_frequency",
                    "keywords:letter_frequency",
                ],
                "kwargs": [
                    {"capital_relation": "less than", "capital_frequency": 10},
                    {"capital_relation": "at least", "capital_frequency": 1},
                    {"let_relation": "at least", "letter": "#", "let_frequency": 2},
                ],
            }
        )
        + "\n"
    )
  first, second = read_prompts(str(path))
  assert first.key == "1000"
  assert [i.id for i in first.instructions][1] == "detectable_format:number_highlighted_sections"
  assert score_one(second, "A TEAM PLAYER #skills #work")["strict"] == [True, True, True]
  assert score_one(second, "no capitals #one")["strict"] == [True, False, False]


def test_a_bad_line_is_named(tmp_path):
  path = tmp_path / "bad.jsonl"
  good = {"key": 1, "prompt": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
  bad = {**good, "key": 2, "instruction_id_list": ["keywords:existence"], "kwargs": [{}]}
  path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
  with pytest.raises(ValueError, match=rf"{path}:2: keywords:existence: .*missing \['keywords'\]"):
    read_prompts(str(path))
  path.write_text(json.dumps(good) + "\n{oops\n")
  with pytest.raises(ValueError, match=rf"{path}:2:"):
    read_prompts(str(path))


def test_the_tiny_config_names_only_eval_flags():
  import argparse
  from distil_jax.commands.eval import add_arguments, apply_config

  parser = argparse.ArgumentParser()
  add_arguments(parser)
  defaults = vars(parser.parse_args([]))
  args = parser.parse_args(["--config", "configs/eval/tiny.py", "--limit", "3"])
  apply_config(args, defaults)
  assert args.model == "/tmp/eval-tiny/hf" and args.speed is True and args.speed_batches == "1,32"
  assert args.limit == 3  # the command line wins over the config
