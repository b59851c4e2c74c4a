"""LLM judges over an endpoint: MT-Bench-style single-answer grading and AlpacaEval-style pairwise.

NOT COMPARABLE WITH THE OFFICIAL LEADERBOARDS: the judge model, its prompts (written here) and the
reference answers are the user's, so the figures rank checkpoints against each other only.

Single-answer grading (multi-turn): the model answers turn 1, then turn 2 with its own turn-1
answer in the context; the judge rates each answer 1-10 and writes "Rating: [[N]]". Scores are
averaged per turn, per category and overall. An unparsable verdict is counted, not scored.

Pairwise: the judge compares the model's answer with a reference answer twice, once in each
position, and writes [[A]], [[B]] or [[C]] (tie). An instruction's win is the mean of the two
verdicts (win 1, tie 0.5, loss 0), which cancels the judge's preference for a position.
Win rate = mean win. Length-controlled win rate: a logistic regression of the win on the scaled
length difference d_i = (len(model_i) - len(ref_i)) / sd(len(model) - len(ref)) (characters),
    P(win_i) = sigmoid(a + b * d_i),   fitted by Newton's method with an L2 penalty 1e-3 on (a, b),
evaluated at d = 0: lc_win_rate = sigmoid(a), the win rate the model would have had at equal lengths.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

NOT_COMPARABLE = "not comparable with the official leaderboards (own judge, prompts and references)"

_SINGLE_SYSTEM = (
    "Role: eval judge `single`. You are an impartial judge of an AI assistant's answer. Consider "
    "helpfulness, relevance, accuracy, depth, creativity and detail. Explain briefly, then rate the "
    'answer from 1 to 10 in exactly this form: "Rating: [[5]]".'
)
_PAIR_SYSTEM = (
    "Role: eval judge `pairwise`. You are an impartial judge comparing two AI assistants' answers to "
    "the same user instruction. Ignore the order in which they are shown and their length; judge "
    "which answer follows the instruction better. Explain briefly, then give your verdict in "
    'exactly this form: "[[A]]" if assistant A is better, "[[B]]" if B is better, "[[C]]" for a tie.'
)
_RATING = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")
_RATING_LOOSE = re.compile(r"[Rr]ating:\s*\[?(\d+(?:\.\d+)?)")
_VERDICT = re.compile(r"\[\[([ABC])\]\]")


def read_questions(path: str) -> list[dict]:
  """MT-Bench question file (JSONL: question_id, category, turns[, reference])."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        turns = row["turns"]
        if not turns or not all(isinstance(t, str) for t in turns):
          raise ValueError("`turns` must be a non-empty list of strings")
      except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}:{lineno}: {e}") from None
      rows.append(
          {
              "question_id": row.get("question_id", lineno),
              "category": row.get("category", ""),
              "turns": turns,
              "reference": row.get("reference") or [],
          }
      )
  return rows


def read_references(path: str) -> list[dict]:
  """AlpacaEval-style reference answers: a JSON list or JSONL of {instruction, output}."""
  with open(path, encoding="utf-8") as f:
    raw = f.read()
  try:
    rows = (
        json.loads(raw)
        if raw.lstrip().startswith("[")
        else [json.loads(l) for l in raw.splitlines() if l.strip()]
    )
  except ValueError as e:
    raise ValueError(f"{path}: not JSON or JSONL ({e})") from None
  for i, row in enumerate(rows, 1):
    if (
        not isinstance(row, dict)
        or not isinstance(row.get("instruction"), str)
        or not isinstance(row.get("output"), str)
    ):
      raise ValueError(f"{path}: entry {i} needs string `instruction` and `output`")
  return rows


def single_prompt(
    turns: list[str], answers: list[str], turn: int, reference: list[str]
) -> list[dict]:
  """The judge's messages for rating the answer to `turns[turn]` (earlier turns shown as context)."""
  parts = []
  for t in range(turn + 1):
    parts.append(f"<|User turn {t + 1}|>\n{turns[t]}\n\n<|Assistant turn {t + 1}|>\n{answers[t]}")
  if reference and turn < len(reference) and reference[turn]:
    parts.append(f"<|Reference answer for turn {turn + 1}|>\n{reference[turn]}")
  ask = f"Rate the assistant's answer to turn {turn + 1} only."
  return [
      {"role": "system", "content": _SINGLE_SYSTEM},
      {"role": "user", "content": "\n\n".join(parts) + "\n\n" + ask},
  ]


def parse_rating(text: str) -> float | None:
  found = _RATING.findall(text) or _RATING_LOOSE.findall(text)
  if not found:
    return None
  value = float(found[-1])
  return value if 1 <= value <= 10 else None


def pairwise_prompt(instruction: str, answer_a: str, answer_b: str) -> list[dict]:
  user = (
      f"[User instruction]\n{instruction}\n\n[Assistant A's answer]\n{answer_a}\n[End of A]\n\n"
      f"[Assistant B's answer]\n{answer_b}\n[End of B]"
  )
  return [{"role": "system", "content": _PAIR_SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> str | None:
  found = _VERDICT.findall(text)
  return found[-1] if found else None


def pair_win(model_first: str | None, model_second: str | None) -> float | None:
  """The model's win from both orders: in the first it is A, in the second it is B."""
  if model_first is None or model_second is None:
    return None
  score_a = {"A": 1.0, "C": 0.5, "B": 0.0}
  return (score_a[model_first] + (1.0 - score_a[model_second])) / 2


def length_controlled_win_rate(
    wins: list[float], model_lengths: list[int], ref_lengths: list[int], l2: float = 1e-3
) -> dict:
  """Logistic regression of the (fractional) win on the scaled length difference; see the module."""
  w = np.asarray(wins, np.float64)
  diff = np.asarray(model_lengths, np.float64) - np.asarray(ref_lengths, np.float64)
  scale = diff.std() or 1.0
  x = np.stack([np.ones_like(diff), diff / scale], axis=1)
  beta = np.zeros(2)
  for _ in range(100):
    p = 1.0 / (1.0 + np.exp(-(x @ beta)))
    grad = x.T @ (w - p) - l2 * beta
    hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(2)
    step = np.linalg.solve(hess, grad)
    beta = beta + step
    if np.max(np.abs(step)) < 1e-10:
      break
  return {
      "lc_win_rate": float(1.0 / (1.0 + math.exp(-beta[0]))),
      "intercept": float(beta[0]),
      "length_coefficient": float(beta[1]),
      "length_scale_chars": float(scale),
  }


def summarize_single(rows: list[dict]) -> dict:
  """rows: {question_id, category, ratings: [per turn, None if unparsable]}."""
  per_turn, per_category, scored, unparsed = {}, {}, [], 0
  for row in rows:
    for t, rating in enumerate(row["ratings"]):
      if rating is None:
        unparsed += 1
        continue
      scored.append(rating)
      per_turn.setdefault(f"turn_{t + 1}", []).append(rating)
      per_category.setdefault(row["category"] or "none", []).append(rating)
  mean = lambda xs: sum(xs) / len(xs) if xs else None
  return {
      "score": mean(scored),
      "per_turn": {k: mean(v) for k, v in sorted(per_turn.items())},
      "per_category": {k: mean(v) for k, v in sorted(per_category.items())},
      "judged": len(scored),
      "unparsed": unparsed,
      "note": NOT_COMPARABLE,
  }


def summarize_pairwise(
    wins: list[float | None], model_answers: list[str], references: list[str]
) -> dict:
  kept = [i for i, w in enumerate(wins) if w is not None]
  result = {
      "win_rate": None,
      "lc_win_rate": None,
      "judged": len(kept),
      "unparsed": len(wins) - len(kept),
      "mean_model_chars": float(np.mean([len(a) for a in model_answers])) if model_answers else 0.0,
      "mean_reference_chars": float(np.mean([len(r) for r in references])) if references else 0.0,
      "note": NOT_COMPARABLE,
  }
  if kept:
    ws = [wins[i] for i in kept]
    result["win_rate"] = sum(ws) / len(ws)
    result.update(
        length_controlled_win_rate(
            ws, [len(model_answers[i]) for i in kept], [len(references[i]) for i in kept]
        )
    )
  return result
