"""The official `openai` client against `distil-jax serve` over loopback: streaming, n, seeds,
logprobs, echo, and the logit adjustments, each checked against its definition."""

import concurrent.futures

import httpx
import numpy as np
import openai
import pytest

from distil_jax.testing.hf_models import hf_logits

QUESTION = [{"role": "user", "content": "Write a haiku about distillation of language models."}]


@pytest.fixture(scope="module")
def client(server):
  return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def _log_softmax(x):
  x = x.astype(np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_streamed_chat_equals_the_whole_answer(client):
  whole = client.chat.completions.create(
      model="tiny", messages=QUESTION, temperature=0, max_tokens=12
  )
  chunks = list(
      client.chat.completions.create(
          model="tiny",
          messages=QUESTION,
          temperature=0,
          max_tokens=12,
          stream=True,
          stream_options={"include_usage": True},
      )
  )
  text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
  assert text == whole.choices[0].message.content
  assert chunks[0].choices[0].delta.role == "assistant"
  reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
  assert reasons == [whole.choices[0].finish_reason]
  assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_streamed_completion_equals_the_whole_answer_and_ends_with_done(client, server):
  request = dict(model="tiny", prompt="The capital of France is", temperature=0, max_tokens=10)
  whole = client.completions.create(**request)
  streamed = list(client.completions.create(**request, stream=True))
  assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text
  assert all(c.usage is None for c in streamed)  # usage only when asked for
  raw = httpx.post(f"{server.url}/completions", json={**request, "stream": True}, timeout=60)
  assert raw.headers["content-type"].startswith("text/event-stream")
  events = [e for e in raw.text.split("\n\n") if e]
  assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_logit_bias_makes_one_token_the_output(client, tokenizer):
  token = tokenizer.encode(" banana")[0]
  out = client.completions.create(
      model="tiny", prompt="Fruit:", temperature=0, max_tokens=5, logit_bias={str(token): 100}
  )
  assert out.choices[0].text == tokenizer.decode([token] * 5)
  banned = client.completions.create(model="tiny", prompt="Fruit:", temperature=0, max_tokens=5)
  first = tokenizer.encode(banned.choices[0].text)[0]
  again = client.completions.create(
      model="tiny", prompt="Fruit:", temperature=0, max_tokens=5, logit_bias={str(first): -100}
  )
  assert tokenizer.encode(again.choices[0].text)[0] != first


def _adjusted(logits, prompt, new, *, repetition, frequency, presence, bias):
  """float64 reference of the documented order: bias, repetition (prompt + output), frequency and
  presence (output only)."""
  x = logits.astype(np.float64).copy()
  for token, value in bias.items():
    x[token] += value
  seen = set(prompt) | set(new)
  for t in seen:
    x[t] = x[t] / repetition if x[t] > 0 else x[t] * repetition
  for t in set(new):
    x[t] -= frequency * new.count(t) + presence
  return x


def test_penalties_and_bias_match_a_numpy_reference_of_their_definitions(
    client, checkpoint, tokenizer
):
  prompt = tokenizer.encode("one two one two one two one two")
  settings = dict(repetition=1.5, frequency=0.7, presence=0.4, bias={prompt[0]: 1.0, 11: -2.0})
  body = {
      "model": "tiny",
      "prompt": prompt,
      "temperature": 0,
      "max_tokens": 12,
      "frequency_penalty": 0.7,
      "presence_penalty": 0.4,
      "logit_bias": {str(prompt[0]): 1.0, "11": -2.0},
  }
  out = client.completions.create(**body, extra_body={"repetition_penalty": 1.5}, logprobs=0)
  new = tokenizer.encode(out.choices[0].text)
  new = new[: len(out.choices[0].logprobs.tokens)]
  logits = hf_logits(checkpoint, np.array([prompt + new]))[0]
  for i, token in enumerate(new):
    expected = _adjusted(logits[len(prompt) + i - 1], prompt, new[:i], **settings)
    assert token == int(np.argmax(expected)), f"step {i}"
  plain = client.completions.create(model="tiny", prompt=prompt, temperature=0, max_tokens=12)
  assert plain.choices[0].text != out.choices[0].text  # the adjustments changed the answer


def test_repetition_penalty_reduces_repeats(client, tokenizer):
  prompt = tokenizer.encode("la la la la la la la la")
  repeats = lambda text: (lambda ids: len(ids) - len(set(ids)))(tokenizer.encode(text))
  plain = client.completions.create(model="tiny", prompt=prompt, temperature=0, max_tokens=24)
  penalised = client.completions.create(
      model="tiny",
      prompt=prompt,
      temperature=0,
      max_tokens=24,
      extra_body={"repetition_penalty": 3.0},
  )
  assert repeats(plain.choices[0].text) > 0  # the random model loops without a penalty
  assert repeats(penalised.choices[0].text) < repeats(plain.choices[0].text)


def test_seed_and_n(client):
  ask = lambda **kw: client.chat.completions.create(
      model="tiny", messages=QUESTION, temperature=1.0, max_tokens=8, **kw
  )
  first, second, other = ask(seed=7, n=2), ask(seed=7, n=2), ask(seed=8, n=2)
  texts = lambda r: [c.message.content for c in r.choices]
  assert [c.index for c in first.choices] == [0, 1]
  assert texts(first) == texts(second)  # same seed, same answers
  assert texts(first) != texts(other)
  assert len(set(texts(first))) > 1  # the n choices are separate samples


def test_chat_logprobs_and_top_logprobs(client):
  out = client.chat.completions.create(
      model="tiny", messages=QUESTION, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3
  )
  content = out.choices[0].logprobs.content
  assert "".join(t.token for t in content) == out.choices[0].message.content
  for t in content:
    assert len(t.top_logprobs) == 3
    assert t.logprob == pytest.approx(t.top_logprobs[0].logprob, abs=1e-5)  # greedy: the best


def test_echo_returns_prompt_logprobs_equal_to_transformers(client, checkpoint, tokenizer):
  prompt = tokenizer.encode("The quick brown fox jumps over the lazy dog")
  out = client.completions.create(
      model="tiny", prompt=prompt, echo=True, logprobs=2, max_tokens=1, temperature=0
  )
  lp = out.choices[0].logprobs
  assert len(lp.tokens) == len(prompt) + 1 and lp.token_logprobs[0] is None
  assert out.choices[0].text.startswith(tokenizer.decode(prompt))
  reference = _log_softmax(hf_logits(checkpoint, np.array([prompt]))[0])
  expected = [reference[t - 1, prompt[t]] for t in range(1, len(prompt))]
  np.testing.assert_allclose(lp.token_logprobs[1 : len(prompt)], expected, atol=2e-4)
  for t in range(1, len(prompt)):
    assert max(lp.top_logprobs[t].values()) == pytest.approx(reference[t - 1].max(), abs=2e-4)
  scored = client.completions.create(
      model="tiny", prompt=prompt, echo=True, logprobs=0, max_tokens=0
  )
  assert scored.usage.completion_tokens == 0 and len(scored.choices[0].logprobs.tokens) == len(
      prompt
  )


def test_no_max_tokens_is_capped_to_the_rest_of_the_context(client, tokenizer):
  prompt = tokenizer.encode(" x" * 252)[:252]
  out = client.completions.create(
      model="tiny", prompt=prompt, temperature=0, extra_body={"min_tokens": 4}
  )
  assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 256 - 252


def test_one_over_long_request_fails_alone(client, server, tokenizer):
  good = dict(model="tiny", messages=QUESTION, temperature=0, max_tokens=6)
  solo = client.chat.completions.create(**good).choices[0].message.content
  bad = dict(model="tiny", prompt=tokenizer.encode(" x" * 300)[:250], max_tokens=50)
  with concurrent.futures.ThreadPoolExecutor(5) as pool:
    goods = [pool.submit(client.chat.completions.create, **good) for _ in range(4)]
    failing = pool.submit(client.completions.create, **bad)
    assert [f.result().choices[0].message.content for f in goods] == [solo] * 4
    with pytest.raises(openai.BadRequestError) as e:
      failing.result()
  assert e.value.body["code"] == "context_length_exceeded"


def test_a_row_that_fails_in_the_generator_fails_alone(server, tokenizer):
  """Past the protocol's checks, a batch that fails is rerun row by row: only the culprit fails."""
  import asyncio

  from distil_jax.generate.sampling import GREEDY
  from distil_jax.serve.protocol import Row

  good = Row(tokenizer.encode("Hello"), 4, GREEDY, 0, 0, 0)
  bad = Row([1] * 300, 4, GREEDY, 0, 0, 0)  # beyond the model's 256 positions

  async def together():
    return await asyncio.gather(
        server.app.batcher.submit([good]),
        server.app.batcher.submit([bad]),
        server.app.batcher.submit([good]),
        return_exceptions=True,
    )

  first, failed, third = asyncio.run_coroutine_threadsafe(together(), server._loop).result(60)
  assert isinstance(failed, ValueError) and "positions" in str(failed)
  assert first[0].completion.tokens == third[0].completion.tokens
  assert len(first[0].completion.tokens) > 0
