"""Checkers for the 25 verifiable instruction types of Google's IFEval benchmark.

Each checker is `check(response, **kwargs) -> bool` under the benchmark's own instruction id and
keyword-argument names, so its `input_data.jsonl` runs unchanged. The semantics follow the
benchmark's published rules (written anew here); where we differ it is said at the checker:
words, sentences and languages come from `distil_jax.eval.text` (no NLTK data), which also counts
Chinese text. `relation` arguments are "less than" (count < N) or "at least" (count >= N).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from typing import Callable

from distil_jax.eval import text

RELATIONS = ("less than", "at least")


def _compare(count: int, relation: str, threshold: int) -> bool:
  if relation == "less than":
    return count < threshold
  if relation == "at least":
    return count >= threshold
  raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")


def _language_or_pass(response: str, wanted: str) -> bool:
  """The benchmark counts an undecidable text (no letters at all) as following."""
  found = text.detect_language(response)
  return found is None or found == wanted


# keywords:*  (keywords are regular expressions, as in the benchmark, matched case-insensitively)
def keywords_existence(response: str, *, keywords: list[str]) -> bool:
  return all(re.search(k, response, flags=re.IGNORECASE) for k in keywords)


def keywords_frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
  return _compare(len(re.findall(keyword, response, flags=re.IGNORECASE)), relation, frequency)


def keywords_forbidden_words(response: str, *, forbidden_words: list[str]) -> bool:
  """Whole words only (`\\b` boundaries); a Chinese word has no boundaries inside running text, so
  it is matched anywhere (the benchmark has no Chinese words, so its verdicts do not change)."""

  def pattern(word: str) -> str:
    return word if text.has_cjk(word) else rf"\b{word}\b"

  return not any(re.search(pattern(w), response, flags=re.IGNORECASE) for w in forbidden_words)


def keywords_letter_frequency(
    response: str, *, letter: str, let_frequency: int, let_relation: str
) -> bool:
  return _compare(response.lower().count(letter.lower()), let_relation, let_frequency)


# language:*
def language_response_language(response: str, *, language: str) -> bool:
  return _language_or_pass(response, language)


# length_constraints:*
def length_number_sentences(response: str, *, num_sentences: int, relation: str) -> bool:
  return _compare(text.count_sentences(response), relation, num_sentences)


def length_number_paragraphs(response: str, *, num_paragraphs: int) -> bool:
  """Paragraphs are separated by the markdown divider `***`; an empty one inside fails."""
  parts = re.split(r"\s?\*\*\*\s?", response)
  count = len(parts)
  for i, part in enumerate(parts):
    if not part.strip():
      if 0 < i < len(parts) - 1:
        return False
      count -= 1
  return count == num_paragraphs


def length_number_words(response: str, *, num_words: int, relation: str) -> bool:
  return _compare(text.count_words(response), relation, num_words)


def length_nth_paragraph_first_word(
    response: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str
) -> bool:
  """Paragraphs are separated by a blank line (`\\n\\n`); the nth must start with `first_word`
  (case-insensitive, leading quotes and trailing punctuation ignored). A Chinese `first_word` only
  has to begin the paragraph (no space after it is needed; the benchmark has no Chinese words)."""
  parts = response.split("\n\n")
  count = sum(1 for p in parts if p.strip())
  if nth_paragraph > count or nth_paragraph < 1:
    return False
  paragraph = parts[nth_paragraph - 1].strip()
  if not paragraph:
    return False
  wanted = first_word.strip().lower()
  if text.has_cjk(wanted):  # Chinese has no spaces between words: the paragraph starts with it
    return count == num_paragraphs and paragraph.lstrip("'\"“「").startswith(wanted)
  word = paragraph.split()[0].strip().lstrip("'\"")
  word = re.split(r"[.,?!'\"]", word, maxsplit=1)[0].lower()
  return count == num_paragraphs and word == wanted


# detectable_content:*
def content_number_placeholders(response: str, *, num_placeholders: int) -> bool:
  return len(re.findall(r"\[.*?\]", response)) >= num_placeholders


def content_postscript(response: str, *, postscript_marker: str) -> bool:
  lowered = response.lower()
  if postscript_marker == "P.P.S":
    pattern = r"\s*p\.\s?p\.\s?s.*$"
  elif postscript_marker == "P.S.":
    pattern = r"\s*p\.\s?s\..*$"
  else:
    pattern = r"\s*" + postscript_marker.lower() + r".*$"
  return bool(re.findall(pattern, lowered, flags=re.MULTILINE))


# detectable_format:*
def format_number_bullet_lists(response: str, *, num_bullets: int) -> bool:
  stars = re.findall(r"^\s*\*[^\*].*$", response, flags=re.MULTILINE)
  dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
  return len(stars) + len(dashes) == num_bullets


CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def format_constrained_response(response: str) -> bool:
  return any(option in response.strip() for option in CONSTRAINED_RESPONSES)


def format_number_highlighted_sections(response: str, *, num_highlights: int) -> bool:
  """`*text*` and `**text**` spans with something in them, counted as the benchmark does."""
  single = [h for h in re.findall(r"\*[^\n\*]*\*", response) if h.strip("*").strip()]
  double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", response) if h[2:-2].strip()]
  return len(single) + len(double) >= num_highlights


def format_multiple_sections(response: str, *, section_spliter: str, num_sections: int) -> bool:
  parts = re.split(r"\s?" + section_spliter + r"\s?\d+\s?", response)
  return len(parts) - 1 >= num_sections


def format_json_format(response: str) -> bool:
  """The whole response is JSON, optionally inside one ``` / ```json fence."""
  body = response.strip()
  for prefix in ("```json", "```Json", "```JSON", "```"):
    if body.startswith(prefix):
      body = body[len(prefix) :]
      break
  body = body.removesuffix("```").strip()
  try:
    json.loads(body)
  except ValueError:
    return False
  return True


def format_title(response: str) -> bool:
  return any(t[2:-2].strip() for t in re.findall(r"<<[^\n]+>>", response))


# combination:*
def combination_two_responses(response: str) -> bool:
  """Exactly two different non-empty answers separated by six asterisks."""
  parts = response.split("******")
  answers = []
  for i, part in enumerate(parts):
    if part.strip():
      answers.append(part.strip())
    elif 0 < i < len(parts) - 1:
      return False
  return len(answers) == 2 and answers[0] != answers[1]


def combination_repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
  return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


# startend:*
def startend_end_checker(response: str, *, end_phrase: str) -> bool:
  return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def startend_quotation(response: str) -> bool:
  body = response.strip()
  return len(body) > 1 and body[0] == '"' and body[-1] == '"'


# change_case:*
def case_capital_word_frequency(
    response: str, *, capital_frequency: int, capital_relation: str
) -> bool:
  """Words (\\w+ runs) written entirely in capitals; the benchmark tokenises with NLTK, which
  keeps "U.S.A." as one word where we see three."""
  capitals = sum(1 for w in re.findall(r"\w+", response) if w.isupper())
  return _compare(capitals, capital_relation, capital_frequency)


def case_english_capital(response: str) -> bool:
  return response.isupper() and _language_or_pass(response, "en")


def case_english_lowercase(response: str) -> bool:
  return response.islower() and _language_or_pass(response, "en")


# punctuation:*
def punctuation_no_comma(response: str) -> bool:
  """No ASCII comma. (The Chinese full-width comma ， is a different character and is allowed.)"""
  return "," not in response


CHECKERS: dict[str, Callable[..., bool]] = {
    "keywords:existence": keywords_existence,
    "keywords:frequency": keywords_frequency,
    "keywords:forbidden_words": keywords_forbidden_words,
    "keywords:letter_frequency": keywords_letter_frequency,
    "language:response_language": language_response_language,
    "length_constraints:number_sentences": length_number_sentences,
    "length_constraints:number_paragraphs": length_number_paragraphs,
    "length_constraints:number_words": length_number_words,
    "length_constraints:nth_paragraph_first_word": length_nth_paragraph_first_word,
    "detectable_content:number_placeholders": content_number_placeholders,
    "detectable_content:postscript": content_postscript,
    "detectable_format:number_bullet_lists": format_number_bullet_lists,
    "detectable_format:constrained_response": format_constrained_response,
    "detectable_format:number_highlighted_sections": format_number_highlighted_sections,
    "detectable_format:multiple_sections": format_multiple_sections,
    "detectable_format:json_format": format_json_format,
    "detectable_format:title": format_title,
    "combination:two_responses": combination_two_responses,
    "combination:repeat_prompt": combination_repeat_prompt,
    "startend:end_checker": startend_end_checker,
    "startend:quotation": startend_quotation,
    "change_case:capital_word_frequency": case_capital_word_frequency,
    "change_case:english_capital": case_english_capital,
    "change_case:english_lowercase": case_english_lowercase,
    "punctuation:no_comma": punctuation_no_comma,
}


@dataclasses.dataclass(frozen=True)
class Instruction:
  """One instruction of a prompt: its id and the keyword arguments its checker takes."""

  id: str
  kwargs: dict

  def check(self, response: str) -> bool:
    """The benchmark's rule: an empty (all-whitespace) response follows nothing."""
    return bool(response.strip()) and CHECKERS[self.id](response, **self.kwargs)


def kwarg_names(instruction_id: str) -> tuple[str, ...]:
  params = inspect.signature(CHECKERS[instruction_id]).parameters
  return tuple(name for name, p in params.items() if p.kind is p.KEYWORD_ONLY)


def make_instruction(instruction_id: str, kwargs: dict | None) -> Instruction:
  """Validated instruction; `None` values (the benchmark's files carry them for unused keys) are
  dropped. Raises ValueError naming the id and the offending argument."""
  if instruction_id not in CHECKERS:
    raise ValueError(f"unknown instruction id {instruction_id!r}")
  given = {k: v for k, v in (kwargs or {}).items() if v is not None}
  names = kwarg_names(instruction_id)
  unknown = sorted(set(given) - set(names))
  missing = sorted(set(names) - set(given))
  if unknown or missing:
    raise ValueError(
        f"{instruction_id}: expects arguments {list(names)}, "
        f"unknown {unknown}, missing {missing}"
    )
  for key in ("relation", "let_relation", "capital_relation"):
    if key in given and given[key] not in RELATIONS:
      raise ValueError(f"{instruction_id}: {key} must be one of {RELATIONS}, got {given[key]!r}")
  return Instruction(instruction_id, given)
