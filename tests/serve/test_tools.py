"""Qwen2.5 tool calling: tools and past calls reach the prompt exactly as transformers renders the
chat template, and `<tool_call>` blocks in a reply come back as OpenAI `tool_calls`."""

import json

import openai
import pytest

from distil_jax.generate.engine import Completion
from distil_jax.serve import protocol, responses
from distil_jax.serve.tools import parse_tool_calls

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
}
ROUND_TRIP = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21}'},
]


def _reference_prompt(tokenizer, tools):
  """transformers' own rendering, with the call's arguments as the dict the template expects."""
  messages = [dict(m) for m in ROUND_TRIP]
  messages[1] = {
      "role": "assistant",
      "content": "",
      "tool_calls": [
          {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
      ],
  }
  text = tokenizer.apply_chat_template(
      messages, tools=tools, tokenize=False, add_generation_prompt=True
  )
  return text, tokenizer(text, add_special_tokens=False)["input_ids"]


def test_tools_and_past_calls_render_as_transformers_does(tokenizer):
  job = protocol.parse_chat(
      {"model": "tiny", "messages": ROUND_TRIP, "tools": [WEATHER]},
      tokenizer,
      ("tiny",),
      protocol.Defaults(max_len=4096),
  )
  text, ids = _reference_prompt(tokenizer, [WEATHER])
  assert job.rows[0].prompt == ids and job.tools
  assert '"name": "get_weather"' in text and "<tool_response>" in text and "<tools>" in text


def test_the_openai_client_sends_a_tool_round_trip(server, tokenizer):
  client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
  out = client.chat.completions.create(
      model="tiny",
      messages=ROUND_TRIP,
      tools=[WEATHER],
      tool_choice="auto",
      temperature=0,
      max_tokens=4,
  )
  assert out.usage.prompt_tokens == len(_reference_prompt(tokenizer, [WEATHER])[1])
  none = client.chat.completions.create(
      model="tiny",
      messages=ROUND_TRIP,
      tools=[WEATHER],
      tool_choice="none",
      temperature=0,
      max_tokens=4,
  )
  assert none.usage.prompt_tokens == len(_reference_prompt(tokenizer, None)[1])


def test_tool_call_blocks_parse_into_openai_tool_calls():
  text = (
      'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
      '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
  )
  content, calls = parse_tool_calls(text)
  assert content == "Let me check."
  assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
  assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
  assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
  broken = "<tool_call>\n{not json}\n</tool_call>"
  assert parse_tool_calls(broken) == (broken, [])  # left as the model wrote it


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_with_a_call_becomes_tool_calls(tokenizer, stream):
  reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
  job = protocol.parse_chat(
      {"model": "tiny", "messages": ROUND_TRIP[:1], "tools": [WEATHER], "stream": stream},
      tokenizer,
      ("tiny",),
      protocol.Defaults(max_len=4096),
  )
  answer = responses.Answer(Completion(tokenizer.encode(reply), "stop"))
  if not stream:
    [choice] = responses.chat_response(job, [answer], tokenizer)["choices"]
    message = choice["message"]
    assert choice["finish_reason"] == "tool_calls" and message["content"] is None
    calls = message["tool_calls"]
  else:
    *events, done = responses.stream_events(job, [answer], tokenizer)
    assert done == b"data: [DONE]\n\n"
    events = [json.loads(e.removeprefix(b"data: ")) for e in events]
    calls = [c for e in events for c in e["choices"][0]["delta"].get("tool_calls", [])]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
  assert [c["function"]["name"] for c in calls] == ["get_weather"]
  assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}


def test_parallel_tool_calls_false_returns_the_first_call_only(tokenizer):
  reply = (
      '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
      '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>'
  )
  answer = responses.Answer(Completion(tokenizer.encode(reply), "stop"))
  names = []
  for parallel in (True, False):
    job = protocol.parse_chat(
        {
            "model": "tiny",
            "messages": ROUND_TRIP[:1],
            "tools": [WEATHER],
            "parallel_tool_calls": parallel,
        },
        tokenizer,
        ("tiny",),
        protocol.Defaults(max_len=4096),
    )
    message = responses.chat_response(job, [answer], tokenizer)["choices"][0]["message"]
    names.append([c["function"]["name"] for c in message["tool_calls"]])
  assert names == [["a", "b"], ["a"]]
