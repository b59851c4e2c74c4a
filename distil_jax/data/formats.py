"""Chat records in the wild -> one normal form: a list of `{"role", "content"}` messages.

Accepted (detected per record, by key):
- OpenAI `{"messages": [{"role": "system"|"user"|"assistant", "content": str | [text parts]}]}`;
  this is also what the curation stage writes (`{"id", "messages", "lineage"}`).
- ShareGPT `{"conversations": [{"from": "system"|"human"|"gpt", "value": str}]}`.
- Alpaca `{"instruction", "input"?, "output", "system"?}` -> user = instruction [+ "\\n\\n" + input].

A record that cannot be trained on raises `BadExample` with a short reason; the reasons are the
keys under which `prepare` counts skipped records in the manifest.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}

# Skip reasons, in the order a record is checked.
NON_UTF8 = "non_utf8"
MALFORMED_JSON = "malformed_json"
UNKNOWN_FORMAT = "unknown_format"
MISSING_ROLE = "missing_role"
UNSUPPORTED_ROLE = "unsupported_role"
BAD_CONTENT = "bad_content"
EMPTY_ASSISTANT = "empty_assistant"
NO_ASSISTANT = "no_assistant_turn"


class BadExample(ValueError):
  """A record that cannot become a training example; `reason` is one of the constants above."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail


def parse_line(raw: bytes) -> dict[str, Any]:
  """One JSONL line (or ArrayRecord record) -> a JSON object, or BadExample."""
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise BadExample(NON_UTF8, f"invalid UTF-8 byte at offset {e.start}") from None
  try:
    record = json.loads(text)
  except json.JSONDecodeError as e:
    raise BadExample(MALFORMED_JSON, str(e)) from None
  if not isinstance(record, dict):
    raise BadExample(MALFORMED_JSON, f"expected a JSON object, got {type(record).__name__}")
  return record


def to_messages(record: dict[str, Any]) -> list[dict[str, str]]:
  """Any accepted format -> validated `[{"role", "content"}]` with at least one assistant turn."""
  if "messages" in record:
    messages = [_openai_message(m) for m in _as_list(record["messages"], "messages")]
  elif "conversations" in record:
    messages = [_sharegpt_message(m) for m in _as_list(record["conversations"], "conversations")]
  elif "instruction" in record and "output" in record:
    messages = _alpaca_messages(record)
  else:
    raise BadExample(
        UNKNOWN_FORMAT,
        f"no 'messages', 'conversations' or 'instruction'/'output' "
        f"key (keys: {sorted(record)[:8]})",
    )
  if not any(m["role"] == "assistant" for m in messages):
    raise BadExample(NO_ASSISTANT, "the conversation has no assistant turn")
  for i, m in enumerate(messages):
    if m["role"] == "assistant" and not m["content"].strip():
      raise BadExample(EMPTY_ASSISTANT, f"message {i} is an empty assistant turn")
  return messages


def example_id(record: dict[str, Any], messages: list[dict[str, str]]) -> str:
  """The source's own id when it has one, else a hash of the normalised conversation."""
  source_id = record.get("id")
  if isinstance(source_id, (str, int)) and not isinstance(source_id, bool) and str(source_id):
    return str(source_id)
  canonical = json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
  return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _as_list(value: Any, key: str) -> list:
  if not isinstance(value, list) or not value:
    raise BadExample(UNKNOWN_FORMAT, f"'{key}' must be a non-empty list")
  return value


def _text(content: Any, where: str) -> str:
  if isinstance(content, str):
    return content
  if isinstance(content, list) and all(
      isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
      for p in content
  ):
    return "".join(p["text"] for p in content)  # OpenAI content parts, text only
  raise BadExample(
      BAD_CONTENT,
      f"{where}: content must be a string or text parts, got " f"{type(content).__name__}",
  )


def _openai_message(m: Any) -> dict[str, str]:
  if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not m["role"]:
    raise BadExample(MISSING_ROLE, f"message without a 'role': {str(m)[:80]}")
  if m["role"] not in ROLES or m.get("tool_calls"):
    raise BadExample(UNSUPPORTED_ROLE, f"role {m['role']!r} (tool calls are not trained on yet)")
  return {"role": m["role"], "content": _text(m.get("content"), m["role"])}


def _sharegpt_message(m: Any) -> dict[str, str]:
  if not isinstance(m, dict) or not isinstance(m.get("from"), str) or not m["from"]:
    raise BadExample(MISSING_ROLE, f"turn without a 'from': {str(m)[:80]}")
  if m["from"] not in SHAREGPT_ROLES:
    raise BadExample(UNSUPPORTED_ROLE, f"ShareGPT 'from' {m['from']!r}")
  role = SHAREGPT_ROLES[m["from"]]
  return {"role": role, "content": _text(m.get("value"), role)}


def _alpaca_messages(record: dict[str, Any]) -> list[dict[str, str]]:
  instruction = _text(record["instruction"], "instruction")
  extra = _text(record.get("input") or "", "input")
  messages = []
  if record.get("system"):
    messages.append({"role": "system", "content": _text(record["system"], "system")})
  messages.append(
      {"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction}
  )
  messages.append({"role": "assistant", "content": _text(record["output"], "output")})
  return messages
