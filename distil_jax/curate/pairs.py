"""The judge stage's pairs: for every curated record the judge scored, the teacher's answer
(chosen) against the student's answer it was compared with (rejected), in the pair format of
`distil_jax.pairs.format` (stdlib only, no JAX), with the judge's scores as provenance.

Written next to the shards as `pairs-00000-of-00001.jsonl` (temporary name, then renamed), for
the records that survive every stage; identical and near-duplicate answers are dropped as in
`distil-jax make-pairs`.
"""

from __future__ import annotations

import os
from pathlib import Path

from distil_jax.curate.config import CurateConfig
from distil_jax.curate.records import Record
from distil_jax.pairs import format as pair_format

PAIRS_NAME = "pairs-00000-of-00001.jsonl"


def judge_pairs(records: list[Record], config: CurateConfig) -> list[dict]:
  judge = config.judge
  if judge.student is not None:
    endpoint = config.endpoint(judge.student.endpoint)
    student, sampling = f"{endpoint.name}:{endpoint.model}", judge.student.sampling()
  else:
    student, sampling = judge.student_answers_path, {}
  pairs = []
  for record in records:
    if not record.student_response or pair_format.is_near_duplicate(
        record.response, record.student_response
    ):
      continue
    scores = dict(record.scores)
    named = {
        "teacher_score": scores.get("judge_score"),
        "student_score": scores.get("student_score"),
        "margin": scores.get("fit_difficulty"),
    }
    prompt = ([{"role": "system", "content": record.system}] if record.system else []) + [
        {"role": "user", "content": record.instruction}
    ]
    pairs.append(
        pair_format.make_pair(
            pair_id=record.id,
            prompt=prompt,
            chosen=record.response,
            rejected=record.student_response,
            source="curate-judge",
            student=student,
            sampling=sampling,
            scores={k: v for k, v in named.items() if v is not None},
        )
    )
  return pairs


def write_judge_pairs(directory: str, records: list[Record], config: CurateConfig) -> list[str]:
  """Writes the pairs file when the judge left any; returns the names written."""
  pairs = judge_pairs(records, config)
  if not pairs:
    return []
  pair_format.write_jsonl_atomically(Path(os.path.join(directory, PAIRS_NAME)), pairs)
  return [PAIRS_NAME]
