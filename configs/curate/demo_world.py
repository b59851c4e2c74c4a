"""Curation in `make demo` (tools/demo_method.py): the demo's trained teacher behind
`distil-jax serve` answers each prompt, and the world's rule behind a judge endpoint grades the
teacher's and the student's answers for the Model-Fit-Difficulty filter.

    distil-jax curate --config configs/curate/demo_world.py --workdir CURATED --input seeds.jsonl \
        --config.endpoints.teacher.base_url=http://127.0.0.1:P/v1 \
        --config.endpoints.judge.base_url=http://127.0.0.1:Q/v1 \
        --config.judge.student_answers_path=student_answers.jsonl

Stages: dedup -> refine (the teacher answers the record's own conversation, greedy, with its
top-10 chat log-probs: the answer and, for `distil-jax chat-logits`, the teacher's distribution
at every answer token; answers that do not stop within `max_tokens` are filtered) -> judge
(kept when the teacher's answer scores >= min_score and beats the student's by at least
min_fit_difficulty). A real run swaps the URLs for a hosted teacher and an LLM judge.
"""

import importlib.util
import os

import ml_collections


def _sibling(name):
  """Config files are loaded by path, not as a package: import the neighbouring file."""
  spec = importlib.util.spec_from_file_location(
      f"_curate_{name}", os.path.join(os.path.dirname(__file__), f"{name}.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


demo = _sibling("demo")


def get_config(arg=None):
  config = demo.get_config(arg)
  config.num_output_shards = 1
  config.endpoints = ml_collections.ConfigDict(
      dict(
          teacher=demo.endpoint("http://127.0.0.1:8000/v1", "teacher", max_in_flight=64),
          judge=demo.endpoint("http://127.0.0.1:8002/v1", "rule-judge", max_in_flight=64),
      )
  )
  config.stages = ("dedup", "refine", "judge")
  # This world's prompts differ by an operand ("What is 3 * 4?" / "What is 3 * 5?"): distinct
  # questions that 5-character shingles call near duplicates. Only exact repeats go.
  config.dedup.near_threshold = 1.01
  config.refine = ml_collections.ConfigDict(
      dict(agent=demo.agent(max_tokens=16, top_logprobs=10), cot_tasks=())
  )
  config.judge = ml_collections.ConfigDict(
      dict(
          agent=demo.agent("judge", max_tokens=64),
          min_score=5.0,  # the rule judge: 9 right and formatted, 5 right content, 1 wrong
          min_fit_difficulty=1.0,
          student=demo.agent("", max_tokens=16),  # no endpoint: the answers come from a file
          student_answers_path="",
      )
  )
  return config
