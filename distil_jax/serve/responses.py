"""The OpenAI wire format out: whole responses and server-sent-event chunks for stream=true.

A streamed answer is cut into one chunk per token's text, after the same stop-string cut as the
whole response, so the concatenated deltas equal the non-streamed text exactly.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator

from distil_jax.generate.chat import decode
from distil_jax.generate.engine import Completion
from distil_jax.serve.protocol import Job
from distil_jax.serve.tools import parse_tool_calls


@dataclasses.dataclass(frozen=True)
class Answer:
  """One row's result: its completion and, for echo, the prompt's scores from `Generator.score`."""

  completion: Completion
  prompt_scores: tuple | None = None


def _pieces(tokens: list[int], decoder) -> list[str]:
  """The text each token adds to the decoded prefix (multi-byte characters land on their last token)."""
  pieces, previous = [], ""
  for t in range(len(tokens)):
    text = decoder(tokens[: t + 1])
    pieces.append(text[len(previous) :] if text.startswith(previous) else text)
    previous = text
  return pieces


@dataclasses.dataclass(frozen=True)
class Choice:
  text: str
  finish_reason: str
  tokens: list[int]  # the tokens whose text is in `text`
  pieces: list[str] | None  # text per token, summing to `text` (None: not asked for)
  completion: Completion


def finish(tokenizer, c: Completion, stop: tuple[str, ...], pieces: bool = True) -> Choice:
  """The reply after cutting at the first stop string (the stop string left out). The text of
  each token (`pieces`, quadratic in the length) is worked out only when asked for or needed."""
  text = decode(tokenizer, c.tokens)
  cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
  if not cuts:
    per_token = _pieces(c.tokens, lambda ts: decode(tokenizer, ts)) if pieces else None
    return Choice(text, c.finish_reason, list(c.tokens), per_token, c)
  pieces = _pieces(c.tokens, lambda ts: decode(tokenizer, ts))
  cut, kept, length = min(cuts), [], 0
  for piece in pieces:
    if length >= cut:
      break
    kept.append(piece[: cut - length])
    length += len(piece)
  return Choice(text[:cut], "stop", list(c.tokens[: len(kept)]), kept, c)


def _usage(job: Job, answers: list[Answer]) -> dict:
  prompt = sum(len(r.prompt) for r in job.rows[:: job.n])  # a prompt counts once for its n choices
  completion = sum(len(a.completion.tokens) for a in answers)
  return {
      "prompt_tokens": prompt,
      "completion_tokens": completion,
      "total_tokens": prompt + completion,
  }


def _chat_logprobs(choice: Choice, top_k: int, tokenizer) -> dict:
  entry = lambda tok, piece, lp: {
      "token": piece,
      "logprob": lp,
      "bytes": list(piece.encode()),
      "id": tok,
  }
  c = choice.completion
  return {
      "content": [
          {
              **entry(tok, piece, lp),
              "top_logprobs": [
                  entry(alt, tokenizer.decode([alt]), alt_lp) for alt, alt_lp in top[:top_k]
              ],
          }
          for tok, piece, lp, top in zip(choice.tokens, choice.pieces, c.logprobs, c.top_logprobs)
      ]
  }


def _message(job: Job, choice: Choice) -> tuple[dict, str]:
  if job.tools:
    content, calls = parse_tool_calls(choice.text)
    if calls:
      calls = calls if job.parallel_tool_calls else calls[:1]
      return {"role": "assistant", "content": content, "tool_calls": calls}, "tool_calls"
  return {"role": "assistant", "content": choice.text}, choice.finish_reason


def chat_response(job: Job, answers: list[Answer], tokenizer) -> dict:
  choices = []
  for index, answer in enumerate(answers):
    choice = finish(tokenizer, answer.completion, job.stop, pieces=job.logprobs is not None)
    message, reason = _message(job, choice)
    logprobs = None if job.logprobs is None else _chat_logprobs(choice, job.logprobs, tokenizer)
    choices.append(
        {"index": index, "message": message, "logprobs": logprobs, "finish_reason": reason}
    )
  return {
      "id": f"chatcmpl-{uuid.uuid4().hex}",
      "object": "chat.completion",
      "created": int(time.time()),
      "model": job.model,
      "choices": choices,
      "usage": _usage(job, answers),
  }


def _completion_logprobs(job: Job, answer: Answer, choice: Choice, prompt: list[int], tokenizer):
  tokens, logprobs = list(choice.pieces), list(choice.completion.logprobs[: len(choice.tokens)])
  top = [
      {tokenizer.decode([alt]): lp for alt, lp in t[: job.logprobs]}
      for t in choice.completion.top_logprobs[: len(choice.tokens)]
  ]
  if job.echo:
    scores, score_top = answer.prompt_scores
    tokens = _pieces(prompt, tokenizer.decode) + tokens
    logprobs = [None] + list(scores) + logprobs
    top = (
        [None]
        + [{tokenizer.decode([alt]): lp for alt, lp in t[: job.logprobs]} for t in score_top]
        + top
    )
  offsets, at = [], 0
  for piece in tokens:
    offsets.append(at)
    at += len(piece)
  return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": top, "text_offset": offsets}


def completion_response(job: Job, answers: list[Answer], tokenizer) -> dict:
  choices = []
  for index, (row, answer) in enumerate(zip(job.rows, answers)):
    choice = finish(tokenizer, answer.completion, job.stop, pieces=job.logprobs is not None)
    text = (tokenizer.decode(row.prompt) + choice.text) if job.echo else choice.text
    logprobs = None
    if job.logprobs is not None:
      logprobs = _completion_logprobs(job, answer, choice, row.prompt, tokenizer)
    choices.append(
        {"text": text, "index": index, "logprobs": logprobs, "finish_reason": choice.finish_reason}
    )
  return {
      "id": f"cmpl-{uuid.uuid4().hex}",
      "object": "text_completion",
      "created": int(time.time()),
      "model": job.model,
      "choices": choices,
      "usage": _usage(job, answers),
  }


def _event(payload) -> bytes:
  return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def stream_events(job: Job, answers: list[Answer], tokenizer) -> Iterator[bytes]:
  """The SSE body of a streamed response: the same answer as the whole one, a token's text per
  chunk, then each choice's finish_reason, usage when asked for, and `data: [DONE]`."""
  chat = job.kind == "chat"
  head = {
      "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
      "object": "chat.completion.chunk" if chat else "text_completion",
      "created": int(time.time()),
      "model": job.model,
  }
  usage = {"usage": None} if job.include_usage else {}

  def chunk(index, piece=None, reason=None, logprobs=None, delta=None):
    if chat:
      body = {
          "index": index,
          "delta": delta if delta is not None else ({} if piece is None else {"content": piece}),
          "logprobs": logprobs,
          "finish_reason": reason,
      }
    else:
      body = {"index": index, "text": piece or "", "logprobs": logprobs, "finish_reason": reason}
    return _event({**head, "choices": [body], **usage})

  for index, answer in enumerate(answers):
    choice = finish(tokenizer, answer.completion, job.stop)
    if chat:
      yield chunk(index, delta={"role": "assistant", "content": ""})
    message, reason = _message(job, choice) if chat else (None, choice.finish_reason)
    if message is not None and message.get("tool_calls"):
      calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
      delta = {"content": message["content"], "tool_calls": calls}
      yield chunk(index, delta=delta)
    else:
      for t, piece in enumerate(choice.pieces):
        logprobs = None
        if job.logprobs is not None and chat:
          one = dataclasses.replace(
              choice,
              tokens=choice.tokens[t : t + 1],
              pieces=[piece],
              completion=dataclasses.replace(
                  choice.completion,
                  logprobs=choice.completion.logprobs[t:],
                  top_logprobs=choice.completion.top_logprobs[t:],
              ),
          )
          logprobs = _chat_logprobs(one, job.logprobs, tokenizer)
        elif job.logprobs is not None:
          logprobs = {
              "tokens": [piece],
              "token_logprobs": [choice.completion.logprobs[t]],
              "top_logprobs": [
                  {
                      tokenizer.decode([a]): lp
                      for a, lp in choice.completion.top_logprobs[t][: job.logprobs]
                  }
              ],
              "text_offset": [sum(len(p) for p in choice.pieces[:t])],
          }
        yield chunk(index, piece, logprobs=logprobs)
    yield chunk(index, reason=reason)
  if job.include_usage:
    yield _event({**head, "choices": [], "usage": _usage(job, answers)})
  yield b"data: [DONE]\n\n"


def models_response(served: tuple[str, ...], max_len: int) -> dict:
  return {"object": "list", "data": [model_card(name, max_len) for name in served]}


def model_card(name: str, max_len: int) -> dict:
  return {
      "id": name,
      "object": "model",
      "created": 0,
      "owned_by": "distil-jax",
      "max_model_len": max_len,
  }
