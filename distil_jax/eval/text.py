"""Words, sentences and languages of a response, with no downloaded data (no NLTK punkt).

Words: every run of word characters (`\\w+`, as the benchmark counts English words), except that each
CJK ideograph, kana or hangul syllable counts as one word on its own: "我喜欢猫" is 4 words, not 1.
Sentences: a sentence ends at `.`, `!`, `?` or `…` followed by whitespace or the end of the text, or
at the CJK terminators `。！？` (no space needed); closing quotes and brackets after the terminator
belong to the sentence. A period after a common abbreviation (Mr., e.g., U.S.), a single capital
initial or inside a number (3.14) ends nothing. Line breaks alone end nothing (punkt agrees).
Languages: `langdetect` (its profiles ship inside the wheel), seeded so a verdict never varies;
regional variants reduce to their ISO 639-1 code (zh-cn -> zh).
"""

from __future__ import annotations

import functools
import re

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])\w)+")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e inc ltd co corp no fig approx dept est jan feb mar apr "
    "jun jul aug sep sept oct nov dec mt ft u.s u.k a.m p.m ph.d".split()
)
_TERMINATOR = re.compile(r"(?:[.!?…]+[\"'”’)\]]*(?=\s|$))|(?:[。！？]+[”’」』）)]*)")


def has_cjk(text: str) -> bool:
  return re.search(f"[{_CJK}]", text) is not None


def words(text: str) -> list[str]:
  return _WORD.findall(text)


def count_words(text: str) -> int:
  return len(words(text))


def _ends_abbreviation(text: str, period_at: int) -> bool:
  """True when the `.` at `period_at` closes an abbreviation or an initial, not a sentence."""
  if text[period_at] != "." or (period_at + 1 < len(text) and text[period_at + 1] == "."):
    return False
  start = period_at
  while start > 0 and (text[start - 1].isalpha() or text[start - 1] == "."):
    start -= 1
  token = text[start:period_at].lower()
  if not token:
    return False
  if token in _ABBREVIATIONS:
    return True
  return len(token) == 1 and text[start].isupper()  # "J. Smith"


def split_sentences(text: str) -> list[str]:
  sentences, start = [], 0
  for match in _TERMINATOR.finditer(text):
    if _ends_abbreviation(text, match.start()):
      continue
    piece = text[start : match.end()].strip()
    if piece:
      sentences.append(piece)
    start = match.end()
  tail = text[start:].strip()
  if tail:
    sentences.append(tail)
  return sentences


def count_sentences(text: str) -> int:
  return len(split_sentences(text))


@functools.cache
def _detector_factory():
  from langdetect import DetectorFactory
  from langdetect.detector_factory import init_factory

  DetectorFactory.seed = 0
  init_factory()
  from langdetect import detector_factory

  return detector_factory._factory


def detect_language(text: str) -> str | None:
  """ISO 639-1 code of the text's language, or None when there is nothing to judge (no letters)."""
  from langdetect.lang_detect_exception import LangDetectException

  factory = _detector_factory()
  try:
    detector = factory.create()
    detector.append(text)
    code = detector.detect()
  except LangDetectException:
    return None
  return code.split("-")[0].lower()
