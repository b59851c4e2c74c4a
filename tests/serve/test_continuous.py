"""Continuous batching (`--continuous`): the same answers as the static batcher, a request that
arrives mid-decode is answered without waiting for the running ones, a bad row fails alone."""

import asyncio
import concurrent.futures
import time

import openai
import pytest

from distil_jax.generate.sampling import GREEDY
from distil_jax.serve.protocol import Row

MESSAGES = [{"role": "user", "content": "Write a haiku about distillation of language models."}]
SETTINGS = [
    dict(temperature=0),
    dict(temperature=1.0, top_p=0.9, seed=5),
    dict(
        temperature=0, frequency_penalty=0.8, logit_bias={"11": 2.0}, logprobs=True, top_logprobs=2
    ),
]


def _client(handle):
  return openai.OpenAI(base_url=handle.url, api_key="unused", max_retries=0, timeout=120)


def test_answers_equal_the_static_batchers(continuous, server):
  ask = (
      lambda handle, kw: _client(handle)
      .chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, **kw)
      .choices[0]
  )
  with concurrent.futures.ThreadPoolExecutor(3) as pool:  # sharing the slots
    ours = list(pool.map(lambda kw: ask(continuous, kw), SETTINGS))
  for kw, got in zip(SETTINGS, ours):
    expected = ask(server, kw)
    assert got.message.content == expected.message.content, kw
    assert got.finish_reason == expected.finish_reason
    if kw.get("logprobs"):
      assert [t.logprob for t in got.logprobs.content] == pytest.approx(
          [t.logprob for t in expected.logprobs.content], abs=1e-5
      )


def test_a_short_request_does_not_wait_for_a_long_one(continuous):
  client = _client(continuous)
  client.completions.create(model="tiny", prompt="warm", max_tokens=2)  # compile outside timing
  done = {}

  def run(name, **kw):
    client.completions.create(model="tiny", prompt="Once upon a time", temperature=0, **kw)
    done[name] = time.monotonic()

  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    long = pool.submit(run, "long", max_tokens=120, extra_body={"min_tokens": 120})
    time.sleep(0.5)
    short = pool.submit(run, "short", max_tokens=2)
    long.result(), short.result()
  assert done["short"] < done["long"]  # static batching would answer it after the long one


def test_a_row_that_cannot_be_admitted_fails_alone(continuous, tokenizer):
  good = Row(tokenizer.encode("Hello"), 4, GREEDY, 0, 0, 0)
  bad = Row([1] * 300, 4, GREEDY, 0, 0, 0)  # beyond the 256 positions of a slot

  async def together():
    return await asyncio.gather(
        *(continuous.app.batcher.submit([r]) for r in (good, bad, good)), return_exceptions=True
    )

  first, failed, third = asyncio.run_coroutine_threadsafe(together(), continuous._loop).result(60)
  assert isinstance(failed, ValueError)
  assert first[0].completion.tokens == third[0].completion.tokens and first[0].completion.tokens


def test_tokens_stream_as_they_are_decoded_and_equal_the_whole_answer(continuous):
  client = _client(continuous)
  request = dict(
      model="tiny", messages=MESSAGES, temperature=0, max_tokens=60, extra_body={"min_tokens": 60}
  )
  whole = client.chat.completions.create(**request).choices[0].message.content
  started, arrivals, text = time.monotonic(), [], ""
  for chunk in client.chat.completions.create(**request, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
      arrivals.append(time.monotonic() - started)
      text += chunk.choices[0].delta.content
  assert text == whole
  # Reports come at most every 50 ms, so their number depends on the machine's speed. A buffered
  # answer would arrive as one burst; a live one in several pieces spread over the decoding
  # (3 or more reports at >= 50 ms apart span at least 0.1 s).
  assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] >= 0.09, arrivals


def test_a_stop_string_ends_the_live_stream_where_the_whole_answer_ends(continuous):
  client = _client(continuous)
  request = dict(model="tiny", prompt="Once upon a time", temperature=0, max_tokens=30)
  text = client.completions.create(**request).choices[0].text
  stop = text[5:8]
  cut = client.completions.create(**request, stop=[stop]).choices[0]
  chunks = list(client.completions.create(**request, stop=[stop], stream=True))
  assert "".join(c.choices[0].text for c in chunks) == cut.text == text[: text.find(stop)]
  assert chunks[-1].choices[0].finish_reason == cut.finish_reason == "stop"


@pytest.mark.parametrize(
    "text, stop, expected",
    [
        ("Hello wor", ("world",), ("Hello ", False)),  # "wor" may become the stop string
        ("Hello world!", ("world",), ("Hello ", True)),
        ("caf\ufffd", (), ("caf", False)),  # half a UTF-8 character waits for its other byte
        ("abc", ("x", "bcd"), ("a", False)),
    ],
)
def test_a_delta_holds_nothing_a_later_token_could_change(text, stop, expected):
  from distil_jax.serve.live import settled

  assert settled(text, stop) == expected
