"""Qwen2.5 tool calling in OpenAI's shapes: checking `tools` and tool messages on the way in, and
turning the model's `<tool_call>{json}</tool_call>` blocks into `tool_calls` on the way out.

The chat template renders the tools (a system section listing each function's JSON schema) and
past calls; this module only puts OpenAI's request shapes into the form the template reads.
"""

from __future__ import annotations

import json
import re
import uuid

TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


class ToolError(ValueError):

  def __init__(self, message: str, param: str):
    super().__init__(message)
    self.param = param


def check_tools(tools) -> list[dict]:
  """OpenAI `tools` ([{"type": "function", "function": {name, description?, parameters?}}])."""
  if not isinstance(tools, list):
    raise ToolError("'tools' must be a list of function tools", "tools")
  for i, tool in enumerate(tools):
    fn = tool.get("function") if isinstance(tool, dict) else None
    if (
        not isinstance(tool, dict)
        or tool.get("type") != "function"
        or not isinstance(fn, dict)
        or not isinstance(fn.get("name"), str)
        or not fn["name"]
    ):
      raise ToolError(
          f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}", "tools"
      )
    if not isinstance(fn.get("parameters", {}), dict):
      raise ToolError(f"tools[{i}].function.parameters must be a JSON schema object", "tools")
  return tools


def template_tool_calls(calls, index: int) -> list[dict]:
  """An assistant message's OpenAI `tool_calls` with `arguments` parsed from their JSON string,
  as the Qwen2.5 template writes them back with `tojson`."""
  if not isinstance(calls, list) or not calls:
    raise ToolError(f"messages[{index}].tool_calls must be a non-empty list", "messages")
  out = []
  for j, call in enumerate(calls):
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
      raise ToolError(f"messages[{index}].tool_calls[{j}] needs function.name", "messages")
    arguments = fn.get("arguments", "{}")
    if isinstance(arguments, str):
      try:
        arguments = json.loads(arguments or "{}")
      except json.JSONDecodeError:
        raise ToolError(
            f"messages[{index}].tool_calls[{j}].function.arguments is not JSON", "messages"
        ) from None
    out.append({"type": "function", "function": {"name": fn["name"], "arguments": arguments}})
  return out


def parse_tool_calls(text: str) -> tuple[str | None, list[dict]]:
  """(the text outside the tool-call blocks or None, OpenAI `tool_calls`) from a reply. A block
  whose body is not a JSON object with a string `name` stays in the text, as the model wrote it."""
  calls, kept, at = [], [], 0
  for match in TOOL_CALL.finditer(text):
    try:
      body = json.loads(match.group(1))
    except json.JSONDecodeError:
      continue
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
      continue
    kept.append(text[at : match.start()])
    at = match.end()
    calls.append(
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {
                "name": body["name"],
                "arguments": json.dumps(body.get("arguments", {}), ensure_ascii=False),
            },
        }
    )
  kept.append(text[at:])
  content = "".join(kept).strip()
  return (content or None) if calls else text, calls
