"""Language detection for balancing: a stdlib heuristic over Unicode ranges."""

from __future__ import annotations

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}


def detect_language(text: str) -> str:
  """'zh' when CJK ideographs are at least 20% of the letters, else 'en'."""
  cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf")
  letters = sum(1 for ch in text if ch.isalpha())
  return "zh" if letters and cjk / letters >= 0.2 else "en"
