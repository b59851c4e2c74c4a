"""IFEval-style scoring: prompts file in, strict and loose accuracies out.

A prompts file is JSONL with `key`, `prompt`, `instruction_id_list` and `kwargs` (a list of dicts,
one per instruction), the benchmark's own `input_data.jsonl` format; an optional `language` field
(ours carries it) adds a per-language breakdown.

Strict: the instruction's checker on the response as given. Loose: the instruction counts as
followed if its checker accepts any of 8 variants: the response, without its first line, without
its last line, without both, and each of those four with every `*` removed (markdown emphasis).
Prompt level: a prompt counts when all its instructions are followed; instruction level: each
instruction counts on its own. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import collections
import dataclasses
import json

from distil_jax.eval import text
from distil_jax.eval.instructions import Instruction, make_instruction


@dataclasses.dataclass(frozen=True)
class Prompt:
  key: str
  prompt: str
  instructions: tuple[Instruction, ...]
  language: str = ""


def read_prompts(path: str) -> list[Prompt]:
  """Validated prompts; a bad line raises ValueError naming `file:line`."""
  prompts, seen = [], set()
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        row = json.loads(line)
        ids, kwargs = row["instruction_id_list"], row.get("kwargs") or [{}] * len(
            row["instruction_id_list"]
        )
        if (
            not isinstance(row["prompt"], str)
            or not isinstance(ids, list)
            or len(ids) != len(kwargs)
        ):
          raise ValueError(
              "`prompt` must be a string and `kwargs` a list as long as `instruction_id_list`"
          )
        instructions = tuple(make_instruction(i, k) for i, k in zip(ids, kwargs))
      except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from None
      key = str(row.get("key", lineno))
      if key in seen:
        raise ValueError(f"{where}: duplicate key {key!r}")
      seen.add(key)
      prompts.append(Prompt(key, row["prompt"], instructions, str(row.get("language", ""))))
  if not prompts:
    raise ValueError(f"{path}: no prompts")
  return prompts


def loose_variants(response: str) -> list[str]:
  lines = response.split("\n")
  cut = [
      "\n".join(lines[1:]).strip(),
      "\n".join(lines[:-1]).strip(),
      "\n".join(lines[1:-1]).strip(),
  ]
  base = [response, *cut]
  return base + [r.replace("*", "") for r in base]


def score_one(prompt: Prompt, response: str) -> dict:
  """Per-instruction strict and loose verdicts for one response."""
  variants = loose_variants(response)
  strict = [ins.check(response) for ins in prompt.instructions]
  loose = [any(ins.check(v) for v in variants) for ins in prompt.instructions]
  return {"key": prompt.key, "strict": strict, "loose": loose}


def _fraction(hits: int, total: int) -> float:
  return hits / total if total else 0.0


def aggregate(prompts: list[Prompt], responses: list[str]) -> tuple[dict, list[dict]]:
  """(summary metrics, per-prompt rows). The summary's keys are documented in docs/eval.md."""
  rows = []
  by_type = collections.defaultdict(lambda: [0, 0, 0])  # count, strict, loose
  by_language = collections.defaultdict(lambda: [0, 0, 0])
  for prompt, response in zip(prompts, responses, strict=True):
    row = score_one(prompt, response)
    rows.append(
        {**row, "instruction_id_list": [i.id for i in prompt.instructions], "response": response}
    )
    for ins, s, l in zip(prompt.instructions, row["strict"], row["loose"]):
      counts = by_type[ins.id]
      counts[0] += 1
      counts[1] += s
      counts[2] += l
    if prompt.language:
      lang = by_language[prompt.language]
      lang[0] += 1
      lang[1] += all(row["strict"])
      lang[2] += all(row["loose"])
  n_ins = sum(len(r["strict"]) for r in rows)
  summary = {
      "num_prompts": len(rows),
      "num_instructions": n_ins,
      "prompt_level_strict_acc": _fraction(sum(all(r["strict"]) for r in rows), len(rows)),
      "prompt_level_loose_acc": _fraction(sum(all(r["loose"]) for r in rows), len(rows)),
      "inst_level_strict_acc": _fraction(sum(sum(r["strict"]) for r in rows), n_ins),
      "inst_level_loose_acc": _fraction(sum(sum(r["loose"]) for r in rows), n_ins),
      "mean_response_chars": _fraction(sum(len(r) for r in responses), len(responses)),
      "mean_response_words": _fraction(sum(text.count_words(r) for r in responses), len(responses)),
      "per_instruction": {
          k: {"count": c, "strict_acc": s / c, "loose_acc": l / c}
          for k, (c, s, l) in sorted(by_type.items())
      },
  }
  if by_language:
    summary["per_language"] = {
        k: {"prompts": c, "prompt_level_strict_acc": s / c, "prompt_level_loose_acc": l / c}
        for k, (c, s, l) in sorted(by_language.items())
    }
  return summary, rows
