"""The preference-pair record, the near-duplicate rule, and reading pair files. Stdlib only:
curation writes pairs with it and must never import JAX.

A pair is one JSON object (a JSONL line or an ArrayRecord record):

  {"id": str,                       # the pair id: the prompt's id (one pair per prompt)
   "prompt": [{"role", "content"}], # system?, user, (earlier turns...), ending before the answer
   "chosen": str,                   # the teacher's (curated) answer
   "rejected": str,                 # the student's own answer
   "provenance": {
     "prompt_id": str, "source": "make-pairs" | "curate-judge",
     "student": str,                # student checkpoint path (make-pairs) or endpoint/file (curation)
     "sampling": {"temperature", "top_k", "top_p", "seed", "max_new_tokens"} | {...},
     "finish_reason": "stop" | "length" | "", "rejected_tokens"?: int,
     "scores": {"teacher_score"?, "student_score"?, "margin"?, ...}}}

`margin` is the judge's teacher score minus student score (curation's `fit_difficulty`).

Near-duplicate rule (`is_near_duplicate`): two answers are one when their normalised texts
(case-folded, whitespace collapsed) are equal, or when the Jaccard similarity of their sets of
character 5-grams reaches `threshold` (default 0.9). Character n-grams work for Chinese as well.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PAIR_FORMAT = "distil_jax.pairs.v1"
NGRAM_CHARS = 5
DEFAULT_NEAR_DUPLICATE = 0.9
SOURCES = ("make-pairs", "curate-judge")


class PairError(ValueError):
  """A pair record that cannot be used; the message names the file and line/record."""


def make_pair(
    *,
    pair_id: str,
    prompt: list[dict],
    chosen: str,
    rejected: str,
    source: str,
    student: str,
    sampling: dict,
    scores: dict,
    finish_reason: str = "",
    rejected_tokens: int | None = None,
) -> dict:
  if source not in SOURCES:
    raise ValueError(f"pair source {source!r}: expected one of {SOURCES}")
  provenance = {
      "prompt_id": pair_id,
      "source": source,
      "student": student,
      "sampling": dict(sampling),
      "finish_reason": finish_reason,
      "scores": {k: float(v) for k, v in scores.items()},
  }
  if rejected_tokens is not None:
    provenance["rejected_tokens"] = int(rejected_tokens)  # the student's answer, in tokens
  return {
      "id": pair_id,
      "prompt": prompt,
      "chosen": chosen,
      "rejected": rejected,
      "provenance": provenance,
  }


def normalise(text: str) -> str:
  return " ".join(text.casefold().split())


def char_ngrams(text: str, n: int = NGRAM_CHARS) -> set[str]:
  text = normalise(text)
  return {text[i : i + n] for i in range(max(1, len(text) - n + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
  return len(a & b) / len(a | b) if a | b else 1.0


def is_near_duplicate(a: str, b: str, threshold: float = DEFAULT_NEAR_DUPLICATE) -> bool:
  """True when `a` and `b` are the same answer for preference purposes (see the module doc)."""
  if normalise(a) == normalise(b):
    return True
  return jaccard(char_ngrams(a), char_ngrams(b)) >= threshold


def validate_pair(obj, where: str) -> dict:
  """The pair itself when it is well formed, else PairError naming `where`."""
  if not isinstance(obj, dict):
    raise PairError(f"{where}: expected a JSON object, got {type(obj).__name__}")
  for key in ("id", "chosen", "rejected"):
    if not isinstance(obj.get(key), str) or not obj[key]:
      raise PairError(f"{where}: '{key}' must be a non-empty string")
  prompt = obj.get("prompt")
  if (
      not isinstance(prompt, list)
      or not prompt
      or not all(
          isinstance(m, dict)
          and m.get("role") in ("system", "user", "assistant")
          and isinstance(m.get("content"), str)
          for m in prompt
      )
  ):
    raise PairError(f"{where}: 'prompt' must be a non-empty list of {{role, content}}")
  if prompt[-1]["role"] != "user":
    raise PairError(
        f"{where}: the prompt must end with a user turn, ends with {prompt[-1]['role']!r}"
    )
  return obj


def read_pairs(path: str | Path) -> list[dict]:
  """Every pair of one `*.jsonl` or `*.array_record` file, validated, in order."""
  path = Path(path)
  if path.name.endswith(".array_record"):
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(path))
    try:
      raws = [(f"{path}:{i}", raw) for i, raw in enumerate(reader.read_all(), start=1)]
    finally:
      reader.close()
  else:
    with path.open("rb") as f:
      raws = [(f"{path}:{i}", line) for i, line in enumerate(f, start=1) if line.strip()]
  pairs = []
  for where, raw in raws:
    try:
      obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise PairError(f"{where}: not valid JSON ({e})") from None
    pairs.append(validate_pair(obj, where))
  return pairs


def pair_files(inputs: list[str | Path]) -> list[Path]:
  """Pair files named directly, or every `pairs-*.jsonl` / `pairs-*.array_record` of a directory."""
  files: list[Path] = []
  for item in map(Path, inputs):
    if item.is_dir():
      found = sorted(
          p
          for p in item.iterdir()
          if p.name.startswith("pairs-")
          and (p.name.endswith(".jsonl") or p.name.endswith(".array_record"))
      )
      if not found:
        raise PairError(
            f"{item}: no pair files (pairs-*.jsonl, pairs-*.array_record) in the directory"
        )
      files.extend(found)
    elif item.is_file():
      files.append(item)
    else:
      raise PairError(f"{item}: no such file or directory")
  return files


def write_jsonl_atomically(path: Path, records) -> int:
  """Writes one JSON object a line to `.{name}.tmp`, fsyncs, renames; returns the count."""
  tmp = path.with_name(f".{path.name}.tmp")
  count = 0
  with tmp.open("w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")
      count += 1
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return count
