"""Tolerant extraction of an agent's payload from what real models return.

Models add prose around the tags, wrap everything in code fences, or stop mid-answer
(`finish_reason == "length"`). Parsers pull out exactly one payload or return a `Rejection` with a
countable reason; they never raise and never guess between conflicting payloads.
"""

from __future__ import annotations

import dataclasses
import json
import re

from distil_jax.curate.client import Completion

_FENCE = re.compile(r"^\s*```[\w+-]*[ \t]*\n(.*?)\n?```\s*$", re.S)


@dataclasses.dataclass(frozen=True)
class Rejection:
  reason: str  # truncated | missing_tag | ambiguous | empty | bad_json | out_of_range | ...


def strip_fence(text: str) -> str:
  """Removes one code fence wrapping the whole text (```lang ... ```), keeping fences inside it."""
  match = _FENCE.match(text)
  return match.group(1).strip() if match else text.strip()


def extract_tag(completion: Completion, tag: str) -> str | Rejection:
  """The text inside <tag>...</tag>, once; repeated identical payloads are fine, differing ones are not."""
  if completion.finish_reason == "length":
    return Rejection("truncated")
  found = re.findall(rf"<{tag}>(.*?)</{tag}>", completion.content, re.S)
  if not found:
    return Rejection("missing_tag")
  payloads = {strip_fence(p) for p in found}
  if len(payloads) > 1:
    return Rejection("ambiguous")
  payload = payloads.pop()
  return payload if payload else Rejection("empty")


def extract_json_object(completion: Completion) -> dict | Rejection:
  """The first balanced {...} in the content (fenced or not) that parses as a JSON object."""
  if completion.finish_reason == "length":
    return Rejection("truncated")
  text = completion.content
  decoder = json.JSONDecoder()
  for start in (m.start() for m in re.finditer(r"\{", text)):
    try:
      obj, _ = decoder.raw_decode(text, start)
    except json.JSONDecodeError:
      continue
    if isinstance(obj, dict):
      return obj
  return Rejection("bad_json")


def extract_int(completion: Completion, tag: str, *, low: int, high: int) -> int | Rejection:
  payload = extract_tag(completion, tag)
  if isinstance(payload, Rejection):
    return payload
  if not re.fullmatch(r"[+-]?\d+", payload):
    return Rejection("not_integer")
  value = int(payload)
  return value if low <= value <= high else Rejection("out_of_range")
