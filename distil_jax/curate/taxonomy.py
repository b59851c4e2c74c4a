"""The default task taxonomy (33 types) and its target ratios for resampling."""

from __future__ import annotations

# Reasoning-heavy types weigh more: they are where a small student gains most from a teacher.
_WEIGHTS = {
    "math": 8,
    "reasoning": 6,
    "code_generation": 7,
    "code_debugging": 4,
    "code_explanation": 3,
    "data_analysis": 3,
    "science": 3,
    "writing": 4,
    "creative_writing": 3,
    "rewriting": 2,
    "summarization": 3,
    "translation": 3,
    "question_answering": 5,
    "open_qa": 3,
    "closed_qa": 3,
    "classification": 2,
    "extraction": 2,
    "brainstorming": 2,
    "planning": 2,
    "advice": 2,
    "role_play": 2,
    "chitchat": 1,
    "email": 1,
    "poetry": 1,
    "humor": 1,
    "history": 2,
    "law": 1,
    "medicine": 1,
    "finance": 1,
    "education": 2,
    "tool_use": 2,
    "safety": 1,
    "other": 1,
}


def default_taxonomy() -> dict[str, float]:
  """Task type -> target ratio, summing to 1 (rounded to 6 digits, the remainder on 'other')."""
  total = sum(_WEIGHTS.values())
  ratios = {name: round(weight / total, 6) for name, weight in _WEIGHTS.items()}
  ratios["other"] = round(ratios["other"] + 1.0 - sum(ratios.values()), 6)
  return ratios
