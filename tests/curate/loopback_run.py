"""Shared pieces of the curation tests: seed files and config overrides for a loopback teacher."""

from __future__ import annotations

import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_CONFIG = os.path.join(REPO, "configs", "curate", "demo.py")

SEED_INSTRUCTIONS = [
    "Solve the equation 3x + 5 = 20.",
    "Write a function in python that reverses a list.",
    "Why does ice float on water?",
    "Summarize the plot of Hamlet in three sentences.",
    "Translate 'good morning' into French.",
    "Fix the bug: for i in range(10) print(i)",
    "Write a short poem about autumn leaves.",
    "计算 12 乘以 13 等于多少？",
    "Tell me about FORBIDDEN-TOPIC please.",
    "Compute the sum of the first 100 numbers.",
    "Explain why the sky is blue to a child.",
    "Write a python function that checks if a number is prime.",
    "为什么天空是蓝色的？",
    "Summarize the causes of the first world war.",
    "Solve: a train travels 120 km in 1.5 hours; what is its speed?",
    "Write an email asking a colleague for the quarterly report.",
]


def write_seeds(path: str, count: int) -> str:
  """`count` seed lines cycling through SEED_INSTRUCTIONS, made distinct after the first lap."""
  with open(path, "w", encoding="utf-8") as f:
    for i in range(count):
      base = SEED_INSTRUCTIONS[i % len(SEED_INSTRUCTIONS)]
      text = (
          base
          if i < len(SEED_INSTRUCTIONS)
          else f"{base} (variant {i // len(SEED_INSTRUCTIONS)}: case {i})"
      )
      f.write(json.dumps({"instruction": text}, ensure_ascii=False) + "\n")
  return path


def fast_overrides(base_url: str, **extra) -> list[str]:
  """Points both endpoints at the loopback server, with timeouts and backoffs sized for tests."""
  items = {}
  for name in ("teacher", "student"):
    items.update(
        {
            f"endpoints.{name}.base_url": base_url,
            f"endpoints.{name}.timeout_s": 0.5,
            f"endpoints.{name}.backoff_base_s": 0.02,
            f"endpoints.{name}.backoff_max_s": 0.2,
            f"endpoints.{name}.max_retry_s": 20.0,
            f"endpoints.{name}.max_attempts": 10,
            f"endpoints.{name}.max_in_flight": 32,
        }
    )
  items["progress_interval_s"] = 0.5
  items.update(extra)
  return [f"--config.{k}={v}" for k, v in items.items()]
