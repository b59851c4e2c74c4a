"""`distil-jax serve` over real HTTP on loopback: the OpenAI routes, batching, errors."""

import asyncio

import httpx
import pytest

QUESTIONS = [
    "Hi",
    "What is two plus two? Answer with a number only, please.",
    "Write a haiku about distillation of language models.",
    "Why?",
    "Name three colours.",
    "Translate 'cat' into French.",
]


def _chat(question, **extra):
  return {
      "model": "tiny",
      "messages": [{"role": "user", "content": question}],
      "temperature": 0,
      "max_tokens": 12,
      **extra,
  }


def test_models_lists_the_served_name(server):
  body = httpx.get(f"{server.url}/models").json()
  assert [m["id"] for m in body["data"]] == ["tiny"] and body["object"] == "list"


def test_concurrent_requests_share_a_batch_and_match_solo_answers(server):
  solo = [
      httpx.post(f"{server.url}/chat/completions", json=_chat(q), timeout=60).json()
      for q in QUESTIONS
  ]
  before = server.stats.batches

  async def together():
    async with httpx.AsyncClient(timeout=60) as client:
      return await asyncio.gather(
          *(client.post(f"{server.url}/chat/completions", json=_chat(q)) for q in QUESTIONS)
      )

  responses = asyncio.run(together())
  assert server.stats.batches - before < len(QUESTIONS)  # some requests were batched
  assert server.stats.largest_batch > 1
  for r, alone in zip(responses, solo):
    assert r.status_code == 200
    body = r.json()
    assert body["choices"][0]["message"] == alone["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == alone["choices"][0]["finish_reason"]
    assert body["usage"] == alone["usage"]


def test_chat_response_shape_and_usage(server, tokenizer):
  body = httpx.post(
      f"{server.url}/chat/completions", json=_chat("Hi", max_tokens=5), timeout=60
  ).json()
  assert body["object"] == "chat.completion" and body["model"] == "tiny"
  [choice] = body["choices"]
  assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
  assert choice["finish_reason"] in ("stop", "length")
  usage = body["usage"]
  assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
  prompt = tokenizer.apply_chat_template(
      [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
  )
  assert usage["prompt_tokens"] == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
  if choice["finish_reason"] == "length":
    assert usage["completion_tokens"] == 5


def test_stop_string_cuts_the_text(server):
  full = httpx.post(f"{server.url}/chat/completions", json=_chat(QUESTIONS[2]), timeout=60).json()[
      "choices"
  ][0]
  text = full["message"]["content"]
  if len(text) < 4:
    pytest.skip("the random model ended too early to cut")
  stop = text[2:4]
  cut = httpx.post(
      f"{server.url}/chat/completions", json=_chat(QUESTIONS[2], stop=[stop]), timeout=60
  ).json()["choices"][0]
  assert cut["message"]["content"] == text[: text.find(stop)]
  assert cut["finish_reason"] == "stop"


def test_completions_return_top_logprobs(server):
  body = httpx.post(
      f"{server.url}/completions",
      timeout=60,
      json={
          "model": "tiny",
          "prompt": ["The capital of France is", "1, 2, 3,"],
          "max_tokens": 6,
          "temperature": 0,
          "logprobs": 3,
      },
  ).json()
  assert body["object"] == "text_completion" and len(body["choices"]) == 2
  for index, choice in enumerate(body["choices"]):
    assert choice["index"] == index
    lp = choice["logprobs"]
    n = len(lp["tokens"])
    assert n == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"])
    assert "".join(lp["tokens"]) == choice["text"]
    for chosen, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
      assert 1 <= len(top) <= 3 and chosen <= 0
      assert chosen == pytest.approx(max(top.values()), abs=1e-5)  # greedy picks the best
  assert body["usage"]["completion_tokens"] >= sum(
      len(c["logprobs"]["tokens"]) for c in body["choices"]
  )


@pytest.mark.parametrize(
    "payload, status, param",
    [
        ({"model": "tiny"}, 400, "messages"),
        ({"model": "tiny", "messages": "hello"}, 400, "messages"),
        ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 0}, 400, "n"),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": -1},
            400,
            "temperature",
        ),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            400,
            "max_tokens",
        ),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10_000},
            400,
            "messages",
        ),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            400,
            "stream",
        ),
        ({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
    ],
)
def test_bad_requests_get_openai_style_errors(server, payload, status, param):
  r = httpx.post(f"{server.url}/chat/completions", json=payload, timeout=60)
  assert r.status_code == status
  error = r.json()["error"]
  assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_malformed_json_unknown_route_and_wrong_method(server):
  r = httpx.post(
      f"{server.url}/chat/completions",
      content=b"{not json",
      timeout=10,
      headers={"content-type": "application/json"},
  )
  assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
  assert httpx.get(f"{server.url}/nope", timeout=10).status_code == 404
  assert httpx.get(f"{server.url}/chat/completions", timeout=10).status_code == 405
  assert (
      httpx.post(
          f"{server.url}/completions", json={"model": "tiny", "prompt": [999999]}, timeout=10
      ).status_code
      == 400
  )


def test_a_lenient_server_answers_any_model_name_as_its_own(tokenizer):
  from distil_jax.serve.protocol import Defaults, parse_chat

  body = {"model": "teacher", "messages": [{"role": "user", "content": "x"}]}
  assert parse_chat(body, tokenizer, ("tiny",), Defaults(max_len=256)).model == "tiny"
