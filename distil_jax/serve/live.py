"""Token-by-token SSE streaming under continuous batching: text goes out after every decode step.

A delta never holds text that could still change: an incomplete UTF-8 character (decoded as U+FFFD)
or the start of a stop string is held back until the next token settles it. Once a stop string
appears, the stream ends at it. The concatenated deltas equal the non-streamed answer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from distil_jax.generate.chat import decode
from distil_jax.serve.protocol import Job
from distil_jax.serve.responses import finish


def settled(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
  """(the part of `text` that later tokens cannot change, whether a stop string ended it)."""
  cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
  if cuts:
    return text[: min(cuts)], True
  hold = 0
  for s in stop:
    for k in range(min(len(s) - 1, len(text)), 0, -1):
      if text.endswith(s[:k]):
        hold = max(hold, k)
        break
  return text[: len(text) - hold].rstrip("\ufffd"), False


def can_stream_live(job: Job) -> bool:
  return job.stream and len(job.rows) == 1 and not job.tools and job.logprobs is None


async def live_events(job: Job, tokenizer, batcher, on_end):
  """SSE bytes for one streamed row; `on_end(prompt_tokens, completion_tokens)` runs at the end."""
  chat = job.kind == "chat"
  head = {
      "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
      "object": "chat.completion.chunk" if chat else "text_completion",
      "created": int(time.time()),
      "model": job.model,
  }
  extra = {"usage": None} if job.include_usage else {}

  def event(text=None, reason=None, delta=None):
    if chat:
      body = {
          "index": 0,
          "delta": delta if delta is not None else ({} if text is None else {"content": text}),
          "logprobs": None,
          "finish_reason": reason,
      }
    else:
      body = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
    return (
        f"data: {json.dumps({**head, 'choices': [body], **extra}, ensure_ascii=False)}\n\n".encode()
    )

  row = job.rows[0]
  updates: asyncio.Queue = asyncio.Queue()
  future = batcher.submit_streaming(row, updates.put_nowait)
  sent, generated, reason = "", 0, None
  try:
    if chat:
      yield event(delta={"role": "assistant", "content": ""})
    while reason is None:
      waiter = asyncio.ensure_future(updates.get())
      await asyncio.wait({waiter, future}, return_when=asyncio.FIRST_COMPLETED)
      if not waiter.done():
        waiter.cancel()
        break
      tokens = waiter.result()
      while not updates.empty():
        tokens = updates.get_nowait()
      text, stopped = settled(decode(tokenizer, tokens), job.stop)
      if len(text) > len(sent):
        yield event(text[len(sent) :])
        sent = text
      if stopped:
        reason, generated = "stop", len(tokens)
    if reason is None:
      try:
        answer = await future
      except Exception as e:  # noqa: BLE001 - the status line is gone: report in the stream
        yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n".encode()
        yield b"data: [DONE]\n\n"
        return
      choice = finish(tokenizer, answer.completion, job.stop, pieces=False)
      if len(choice.text) > len(sent):
        yield event(choice.text[len(sent) :])
      reason, generated = choice.finish_reason, len(answer.completion.tokens)
    yield event(reason=reason)
    if job.include_usage:
      usage = {
          "prompt_tokens": len(row.prompt),
          "completion_tokens": generated,
          "total_tokens": len(row.prompt) + generated,
      }
      yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"
  finally:
    on_end(len(row.prompt), generated)
