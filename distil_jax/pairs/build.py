"""Prompts with a teacher answer -> preference pairs whose rejected side is the student's own answer.

Inputs are curated shards (`*.array_record`, `{"id", "messages", "lineage"}`) or chat JSONL in any
format `distil_jax.data.formats` reads. A record's last assistant turn is the chosen answer, the
turns before it are the prompt. The student answers through `answer(prompts, seeds)` (the command
wires the generation engine in); everything else here is plain Python.

Output directory: `pairs-00000.jsonl`, ... each holding the pairs of `shard_size` consecutive
prompts, written under a temporary name and renamed, plus `manifest.json` listing the finished
shards with their counts. A shard is done when the manifest lists it, so a rerun (after a crash or
kill -9) regenerates only unlisted shards; it refuses to resume with different settings.

Drop rules, in order (counted in the manifest under these names): `no_teacher_answer` /
`bad_record` (unreadable input), `prompt_too_long` (the answer reports None), `empty_rejected`,
`identical` (normalised texts equal), `near_duplicate` (character 5-gram Jaccard >= threshold),
and with `min_margin`: `no_margin` (no judge scores recorded) and `low_margin`.
"""

from __future__ import annotations

import collections
import json
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from distil_jax.data import formats, shards
from distil_jax.pairs import format as pair_format

MANIFEST = "manifest.json"
SHARD_NAME = "pairs-{index:05d}.jsonl"
# A student answer: (text, finish_reason, new tokens), or None when the prompt does not fit.
Answer = Callable[[list[list[dict]], list[int]], list[tuple[str, str, int] | None]]


def read_prompts(inputs: Sequence[str | os.PathLike], counts: collections.Counter) -> list[dict]:
  """[{"id", "prompt", "chosen", "scores"}] in input order; unusable records are counted."""
  prompts = []
  for path in map(Path, inputs):
    if not path.is_file():
      raise FileNotFoundError(f"{path}: no such input file")
    if path.name.endswith(shards.SHARD_SUFFIX):
      raws = enumerate(shards.read_records(path), start=1)
    else:
      raws = (
          (i, line)
          for i, line in enumerate(path.read_bytes().splitlines(), start=1)
          if line.strip()
      )
    for _, raw in raws:
      try:
        record = formats.parse_line(raw)
        messages = formats.to_messages(record)
      except formats.BadExample as e:
        counts["no_teacher_answer" if e.reason == formats.NO_ASSISTANT else "bad_record"] += 1
        continue
      if (
          messages[-1]["role"] != "assistant"
          or messages[-2:-1] == []
          or messages[-2]["role"] != "user"
      ):
        counts["bad_record"] += 1
        continue
      prompts.append(
          {
              "id": formats.example_id(record, messages),
              "prompt": messages[:-1],
              "chosen": messages[-1]["content"],
              "scores": _judge_scores(record),
          }
      )
  return prompts


def _judge_scores(record: dict) -> dict[str, float]:
  """Curation's judge scores, renamed: teacher_score, student_score, margin (= fit_difficulty)."""
  lineage = record.get("lineage")
  scores = lineage.get("scores") if isinstance(lineage, dict) else None
  if not isinstance(scores, dict):
    return {}
  names = {
      "judge_score": "teacher_score",
      "student_score": "student_score",
      "fit_difficulty": "margin",
  }
  return {
      new: float(scores[old])
      for old, new in names.items()
      if isinstance(scores.get(old), (int, float))
  }


def row_seed(seed: int, pair_id: str) -> int:
  """A pair's sampling seed: the same whatever shard or batch the prompt lands in."""
  return zlib.crc32(f"{seed}:{pair_id}".encode())


def keep_reason(
    chosen: str, rejected: str, scores: dict, *, near_duplicate: float, min_margin: float | None
) -> str:
  """'' when the pair is kept, else the drop counter's name."""
  if not rejected.strip():
    return "empty_rejected"
  if pair_format.normalise(chosen) == pair_format.normalise(rejected):
    return "identical"
  if pair_format.is_near_duplicate(chosen, rejected, near_duplicate):
    return "near_duplicate"
  if min_margin is not None:
    if "margin" not in scores:
      return "no_margin"
    if scores["margin"] < min_margin:
      return "low_margin"
  return ""


def build_pairs(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    answer: Answer,
    settings: dict,
    shard_size: int = 1000,
    near_duplicate: float = 0.9,
    min_margin: float | None = None,
    log=print,
) -> dict:
  """Writes the pair shards and manifest into `output`; returns the manifest.

  `settings` (JSON): the student path and sampling settings, recorded in every pair's provenance
  (`student`, `sampling`) and in the manifest; a rerun with other settings is refused.
  """
  if shard_size < 1:
    raise ValueError(f"shard_size must be >= 1, got {shard_size}")
  output = Path(output)
  output.mkdir(parents=True, exist_ok=True)
  read_counts: collections.Counter = collections.Counter()
  prompts = read_prompts(inputs, read_counts)
  run_key = {
      "settings": settings,
      "inputs": [str(Path(p).resolve()) for p in inputs],
      "shard_size": shard_size,
      "near_duplicate": near_duplicate,
      "min_margin": min_margin,
  }
  manifest = _load_manifest(output, run_key)
  manifest["read"] = dict(read_counts)
  num_shards = (len(prompts) + shard_size - 1) // shard_size
  manifest["num_shards"] = num_shards
  for index in range(num_shards):
    name = SHARD_NAME.format(index=index)
    if name in manifest["shards"]:
      continue
    chunk = prompts[index * shard_size : (index + 1) * shard_size]
    pairs, counts, answered, student_tokens = _shard_pairs(
        chunk, answer, settings, near_duplicate, min_margin
    )
    pair_format.write_jsonl_atomically(output / name, pairs)
    manifest["shards"][name] = {
        "prompts": len(chunk),
        "pairs": len(pairs),
        "dropped": counts,
        "answered": answered,
        "student_tokens": student_tokens,
    }
    manifest["complete"] = len(manifest["shards"]) == num_shards
    _write_json_atomically(output / MANIFEST, manifest)  # after the shard: listed means written
    log(f"make-pairs: {name}: {len(pairs)} pairs of {len(chunk)} prompts, dropped {counts}")
  manifest["complete"] = True
  answered = sum(s["answered"] for s in manifest["shards"].values())
  manifest["totals"] = {
      "prompts": len(prompts),
      # the student's mean answer length over every prompt it answered (kept
      # or not): run make-pairs before and after DPO to see how length moved
      "student_mean_tokens": round(
          sum(s["student_tokens"] for s in manifest["shards"].values()) / max(answered, 1), 3
      ),
      "pairs": sum(s["pairs"] for s in manifest["shards"].values()),
      "dropped": dict(
          sum(
              (collections.Counter(s["dropped"]) for s in manifest["shards"].values()),
              collections.Counter(),
          )
      ),
  }
  _write_json_atomically(output / MANIFEST, manifest)
  return manifest


def _shard_pairs(
    chunk: list[dict],
    answer: Answer,
    settings: dict,
    near_duplicate: float,
    min_margin: float | None,
) -> tuple[list[dict], dict, int, int]:
  seeds = [row_seed(int(settings.get("seed", 0)), p["id"]) for p in chunk]
  answers = answer([p["prompt"] for p in chunk], seeds) if chunk else []
  pairs, counts, answered, student_tokens = [], collections.Counter(), 0, 0
  for p, seed, result in zip(chunk, seeds, answers):
    if result is None:
      counts["prompt_too_long"] += 1
      continue
    text, finish_reason, num_tokens = result
    answered += 1
    student_tokens += num_tokens
    reason = keep_reason(
        p["chosen"], text, p["scores"], near_duplicate=near_duplicate, min_margin=min_margin
    )
    if reason:
      counts[reason] += 1
      continue
    sampling = {**settings.get("sampling", {}), "seed": seed}
    pairs.append(
        pair_format.make_pair(
            pair_id=p["id"],
            prompt=p["prompt"],
            chosen=p["chosen"],
            rejected=text,
            source="make-pairs",
            student=str(settings.get("student", "")),
            sampling=sampling,
            scores=p["scores"],
            finish_reason=finish_reason,
            rejected_tokens=num_tokens,
        )
    )
  return pairs, dict(counts), answered, student_tokens


def _load_manifest(output: Path, run_key: dict) -> dict:
  path = output / MANIFEST
  if not path.is_file():
    return {"format": pair_format.PAIR_FORMAT, "run": run_key, "shards": {}, "complete": False}
  manifest = json.loads(path.read_text())
  if manifest.get("run") != run_key:
    raise ValueError(
        f"{path}: written with other settings ({manifest.get('run')}); "
        "use a new --output to build pairs with these"
    )
  return manifest


def _write_json_atomically(path: Path, obj: dict) -> None:
  tmp = path.with_name(f".{path.name}.tmp")
  with tmp.open("w") as f:
    f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
