"""Student answers for the Model-Fit-Difficulty score: from a student endpoint or a JSONL file.

A file line is `{"id"?, "instruction"|"prompt"?, "answer"|"completion"|"response"?}` or
`{"id"?, "messages": [..., user, assistant]}` (as `distil-jax generate` writes). Answers are looked up
by record id first, then by the exact instruction text.
"""

from __future__ import annotations

import json

from distil_jax.curate.agents.base import StageContext
from distil_jax.curate.client import Failure
from distil_jax.curate.config import AgentConfig
from distil_jax.curate.records import Record

_ANSWER_FIELDS = ("answer", "completion", "response", "output")
_PROMPT_FIELDS = ("instruction", "prompt")


def _parse_line(obj: dict, where: str) -> tuple[list[str], str]:
  keys = [obj["id"]] if isinstance(obj.get("id"), str) else []
  if isinstance(obj.get("messages"), list) and obj["messages"]:
    turns = obj["messages"]
    if turns[-1].get("role") != "assistant":
      raise ValueError(f"{where}: the last message must be the student's (assistant) answer")
    users = [t.get("content") for t in turns if t.get("role") == "user"]
    return keys + users[-1:], turns[-1].get("content", "")
  answer = next((obj[f] for f in _ANSWER_FIELDS if isinstance(obj.get(f), str)), None)
  if answer is None:
    raise ValueError(f"{where}: no student answer (one of {', '.join(_ANSWER_FIELDS)} or messages)")
  keys += [obj[f] for f in _PROMPT_FIELDS if isinstance(obj.get(f), str)]
  if not keys:
    raise ValueError(f"{where}: needs 'id' or one of {', '.join(_PROMPT_FIELDS)} to match a record")
  return keys, answer


def load_student_answers(path: str) -> dict[str, str]:
  answers: dict[str, str] = {}
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
      if not isinstance(obj, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object")
      keys, answer = _parse_line(obj, f"{path}:{lineno}")
      for key in keys:
        answers.setdefault(key, answer)
  return answers


def build_messages(record: Record) -> list[dict]:
  system = [{"role": "system", "content": record.system}] if record.system else []
  return system + [{"role": "user", "content": record.instruction}]


class StudentAnswers:
  """`await answers.get(record)` -> the student's answer, or a Failure / None when there is none."""

  def __init__(self, ctx: StageContext, student: AgentConfig | None, path: str):
    self._ctx = ctx
    self._student = student
    self._from_file = load_student_answers(path) if path else {}

  async def get(self, record: Record) -> str | Failure | None:
    if record.id in self._from_file:
      return self._from_file[record.id]
    if record.instruction in self._from_file:
      return self._from_file[record.instruction]
    if self._student is None:
      return None
    completion = await self._ctx.ask(self._student, build_messages(record))
    if isinstance(completion, Failure):
      return completion
    return completion.content  # even cut off ("length"), it shows how the student fares
