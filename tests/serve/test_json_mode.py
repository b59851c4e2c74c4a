"""`response_format: {"type": "json_object"}` through the official client over loopback, on a
random-init model: whatever its weights, the reply parses as a JSON object, under both schedulers,
greedy or sampled, streamed or not, and a JSON request leaves the text requests beside it alone."""

import concurrent.futures
import json

import httpx
import jsonschema
import numpy as np
import openai
import pytest

from distil_jax.testing.hf_models import hf_logits

MESSAGES = [{"role": "user", "content": "Describe a cat as JSON with name and age."}]
JSON = {"type": "json_object"}
CAT = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "colour": {"enum": ["black", "white", "tabby"]},
        "toys": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
    },
    "required": ["name", "age", "colour"],
    "additionalProperties": False,
}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "cat", "schema": CAT, "strict": True}}


def _client(handle):
  return openai.OpenAI(base_url=handle.url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(params=["server", "continuous"])
def handle(request):
  return request.getfixturevalue(request.param)


def _ask(handle, **kw):
  kw = {"model": "tiny", "messages": MESSAGES, "max_tokens": 24, "response_format": JSON, **kw}
  return _client(handle).chat.completions.create(**kw)


def test_greedy_reply_is_a_json_object(handle):
  choice = _ask(handle, temperature=0).choices[0]
  assert isinstance(json.loads(choice.message.content), dict)
  assert choice.finish_reason == "stop"


def test_sampled_replies_are_json_objects_for_every_seed(handle):
  texts = []
  for seed in (1, 2, 3):
    out = _ask(handle, temperature=1.0, top_p=0.95, seed=seed, n=2)
    for choice in out.choices:
      assert isinstance(json.loads(choice.message.content), dict), choice.message.content
      texts.append(choice.message.content)
  assert len(set(texts)) > 1  # separate samples, not one forced answer
  again = _ask(handle, temperature=1.0, top_p=0.95, seed=1, n=2)
  assert [c.message.content for c in again.choices] == texts[:2]  # a seed is reproducible


@pytest.mark.parametrize("max_tokens", [3, 5, 9])
def test_a_small_budget_still_closes_the_object(server, max_tokens):
  choice = _ask(server, temperature=0, max_tokens=max_tokens).choices[0]
  assert isinstance(json.loads(choice.message.content), dict)
  assert choice.finish_reason == "stop"


def test_a_budget_too_small_for_any_object_says_length(server):
  out = _ask(server, temperature=0, max_tokens=1)
  assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 1


def test_both_schedulers_give_the_same_json(server, continuous):
  for kw in (dict(temperature=0), dict(temperature=0.8, seed=11)):
    assert _ask(server, **kw).choices[0].message.content == (
        _ask(continuous, **kw).choices[0].message.content
    )


def test_streamed_json_equals_the_whole_reply(handle):
  whole = _ask(handle, temperature=0, max_tokens=40).choices[0]
  chunks = list(_ask(handle, temperature=0, max_tokens=40, stream=True))
  text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
  assert text == whole.message.content and isinstance(json.loads(text), dict)
  assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]


def test_a_concurrent_json_request_leaves_a_text_request_unchanged(handle):
  """Greedy text with log-probs, alone and beside JSON requests (continuous: sharing the decode
  steps; static: the same batch, answered by separate calls)."""
  continuous = handle
  text = dict(model="tiny", messages=MESSAGES, max_tokens=40, temperature=0, logprobs=True)
  text["extra_body"] = {"min_tokens": 40}
  alone = _client(continuous).chat.completions.create(**text).choices[0]
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    jsons = [pool.submit(_ask, continuous, temperature=0.7, seed=s, max_tokens=40) for s in (1, 2)]
    shared = pool.submit(_client(continuous).chat.completions.create, **text).result().choices[0]
    assert all(isinstance(json.loads(j.result().choices[0].message.content), dict) for j in jsons)
  assert handle.app.config.continuous is False or handle.stats.largest_batch >= 2
  assert shared.message.content == alone.message.content
  # Identical tokens; log-probs to float32 rounding (a step over more rows reduces in another order).
  assert [t.logprob for t in shared.logprobs.content] == pytest.approx(
      [t.logprob for t in alone.logprobs.content], abs=1e-5
  )


def test_penalties_and_bias_apply_and_the_reply_still_parses(server, tokenizer):
  plain = _ask(server, temperature=0, max_tokens=16).choices[0].message.content
  first = tokenizer.encode(plain)[1]  # the token after the opening brace
  biased = _ask(
      server,
      temperature=0,
      max_tokens=16,
      frequency_penalty=1.0,
      logit_bias={str(first): -100},
      extra_body={"repetition_penalty": 1.3},
  ).choices[0]
  assert isinstance(json.loads(biased.message.content), dict)
  assert biased.message.content != plain


def test_logprobs_are_the_emitted_tokens_under_the_unconstrained_distribution(
    server, checkpoint, tokenizer
):
  """Each reported log-probability is log_softmax(model logits)[emitted token], computed with
  transformers in float64, although the token was chosen among the valid ones only."""
  body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 12, "temperature": 0}
  body |= {"response_format": JSON, "logprobs": True, "top_logprobs": 2}
  out = httpx.post(f"{server.url}/chat/completions", json=body, timeout=120).json()
  content = out["choices"][0]["logprobs"]["content"]
  emitted = [t["id"] for t in content]
  prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
  prompt = tokenizer.encode(prompt)
  logits = hf_logits(checkpoint, np.array([prompt + emitted]))[0].astype(np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  for i, t in enumerate(content):
    assert t["logprob"] == pytest.approx(logp[len(prompt) + i - 1, emitted[i]], abs=2e-4)
    assert t["top_logprobs"][0]["logprob"] == pytest.approx(
        logp[len(prompt) + i - 1].max(), abs=2e-4
    )
  # The model's own favourite is rarely valid JSON: the constraint changed some choices.
  assert any(t["logprob"] < t["top_logprobs"][0]["logprob"] - 1e-6 for t in content)


@pytest.mark.parametrize(
    "extra, param",
    [
        (
            {"response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"anyOf": []}}}},
            "response_format.json_schema.schema",
        ),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": "json"}, "response_format"),
        ({"response_format": {"type": "json_object", "schema": {}}}, "response_format"),
        ({"response_format": JSON, "stop": ["}"]}, "stop"),
        ({"response_format": JSON, "min_tokens": 4}, "min_tokens"),
        (
            {"response_format": JSON, "tools": [{"type": "function", "function": {"name": "f"}}]},
            "tools",
        ),
    ],
)
def test_what_json_mode_cannot_honour_is_a_400_naming_the_field(server, extra, param):
  body = {"model": "tiny", "messages": MESSAGES, **extra}
  r = httpx.post(f"{server.url}/chat/completions", json=body, timeout=30)
  assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_text_response_format_is_plain_text(server):
  kw = dict(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0)
  plain = _client(server).chat.completions.create(**kw).choices[0].message.content
  text = _client(server).chat.completions.create(**kw, response_format={"type": "text"})
  assert text.choices[0].message.content == plain


def test_json_schema_replies_validate_against_the_schema(handle):
  """Greedy and seeded samples, streamed too: each reply is valid under the schema."""
  replies = [_ask(handle, temperature=0, max_tokens=48, response_format=SCHEMA).choices[0]]
  for seed in (1, 2):
    replies += _ask(
        handle, temperature=1.0, seed=seed, n=2, max_tokens=48, response_format=SCHEMA
    ).choices
  for choice in replies:
    jsonschema.validate(json.loads(choice.message.content), CAT)
    assert choice.finish_reason == "stop"
  chunks = _ask(handle, temperature=0, max_tokens=48, response_format=SCHEMA, stream=True)
  text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
  assert text == replies[0].message.content
