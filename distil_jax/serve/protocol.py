"""The OpenAI wire format: validating request bodies into generation rows, and building responses.

A request becomes one `Row` per prompt (chat: one; completions: one per prompt in `prompt`).
Anything we cannot honour exactly is a 400 with an OpenAI-style error, never silently ignored.
"""
from __future__ import annotations

import dataclasses
import secrets
import time
import uuid

from distil_jax.generate.chat import decode, encode_chat, encode_text
from distil_jax.generate.engine import Completion
from distil_jax.generate.sampling import Sampling

MAX_LOGPROBS = 20
CHAT_ROLES = ("system", "user", "assistant", "tool")


class RequestError(ValueError):
    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


@dataclasses.dataclass(frozen=True)
class Row:
    prompt: list[int]
    max_new_tokens: int
    sampling: Sampling
    seed: int
    salt: int
    num_logprobs: int  # 0: none


@dataclasses.dataclass(frozen=True)
class Job:
    kind: str  # "chat" | "completion"
    model: str
    rows: list[Row]
    stop: tuple[str, ...]
    logprobs: int | None  # completions: top-k count; chat: top_logprobs (None = no logprobs)


def _number(body, name, default, kind, lo=None, hi=None):
    value = body.get(name, default)
    if value is None:
        value = default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f" in [{lo}, {hi}]" if hi is not None else (f" >= {lo}" if lo is not None else "")
        raise RequestError(f"'{name}' must be a{'n integer' if kind is int else ' number'}{bounds}",
                           param=name)
    return kind(value)


def _common(body: dict, served: tuple[str, ...], max_len: int, default_max_tokens: int,
            strict_model: bool):
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    model = body.get("model", served[0])
    if model not in served and not strict_model:
        model = served[0]  # one model per server: any name reaches it, as with llama.cpp
    if model not in served:
        raise RequestError(f"The model '{model}' does not exist; this server has {list(served)}",
                           param="model", status=404, code="model_not_found")
    if body.get("stream"):
        raise RequestError("stream=true is not supported by this server", param="stream")
    if _number(body, "n", 1, int, 1) != 1:
        raise RequestError("only n=1 is supported", param="n")
    temperature = _number(body, "temperature", 1.0, float, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, float, 0.0, 1.0)
    if top_p == 0.0:
        raise RequestError("'top_p' must be > 0", param="top_p")
    top_k = _number(body, "top_k", 0, int, -1)
    sampling = Sampling(temperature, max(top_k, 0), top_p)
    seed = body.get("seed")
    seed = secrets.randbits(31) if seed is None else _number(body, "seed", 0, int) % (1 << 32)
    stop = body.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) and s for s in stop) and len(stop) <= 4:
        stop = tuple(stop)
    else:
        raise RequestError("'stop' must be a string or a list of at most 4 non-empty strings",
                           param="stop")
    if "max_completion_tokens" in body and body["max_completion_tokens"] is not None:
        max_tokens = _number(body, "max_completion_tokens", 0, int, 1)
    else:
        max_tokens = _number(body, "max_tokens", default_max_tokens, int, 1)
    return model, sampling, seed, stop, max_tokens


def _row(prompt, max_tokens, sampling, seed, salt, num_logprobs, max_len, param) -> Row:
    if not prompt:
        raise RequestError("the prompt is empty", param=param)
    if len(prompt) + max_tokens > max_len:
        raise RequestError(
            f"This model's maximum context length is {max_len} tokens. However, you requested "
            f"{len(prompt) + max_tokens} tokens ({len(prompt)} in the prompt, {max_tokens} for the "
            "completion). Please reduce the prompt or max_tokens.", param=param,
            code="context_length_exceeded")
    return Row(prompt, max_tokens, sampling, seed, salt, num_logprobs)


def parse_chat(body, tokenizer, served, max_len, default_max_tokens, strict_model=False) -> Job:
    model, sampling, seed, stop, max_tokens = _common(body, served, max_len, default_max_tokens,
                                                      strict_model)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in CHAT_ROLES:
            raise RequestError(f"messages[{i}] needs a role in {CHAT_ROLES}", param="messages")
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text is understood
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise RequestError(f"messages[{i}].content: only text parts are supported",
                                   param="messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string", param="messages")
        clean.append({"role": m["role"], "content": content})
    logprobs = None
    if body.get("logprobs"):
        logprobs = _number(body, "top_logprobs", 0, int, 0, MAX_LOGPROBS)
    row = _row(encode_chat(tokenizer, clean), max_tokens, sampling, seed, 0,
               0 if logprobs is None else max(logprobs, 1), max_len, "messages")
    return Job("chat", model, [row], stop, logprobs)


def parse_completion(body, tokenizer, served, max_len, default_max_tokens, strict_model=False) -> Job:
    model, sampling, seed, stop, max_tokens = _common(body, served, max_len, default_max_tokens,
                                                      strict_model)
    if body.get("echo"):
        raise RequestError("echo=true is not supported", param="echo")
    if body.get("suffix"):
        raise RequestError("suffix is not supported", param="suffix")
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts = [encode_text(tokenizer, prompt)]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = [encode_text(tokenizer, p) for p in prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        prompts = [list(prompt)]
    elif isinstance(prompt, list) and prompt and all(
            isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
        prompts = [list(p) for p in prompt]
    else:
        raise RequestError("'prompt' must be a string, a list of strings, or token ids",
                           param="prompt")
    vocab = len(tokenizer)
    if any(not 0 <= t < vocab for p in prompts for t in p):
        raise RequestError(f"token ids must be in [0, {vocab})", param="prompt")
    logprobs = body.get("logprobs")
    if logprobs is not None:
        logprobs = _number(body, "logprobs", 0, int, 0, MAX_LOGPROBS)
    rows = [_row(p, max_tokens, sampling, seed, i, 0 if logprobs is None else max(logprobs, 1),
                 max_len, "prompt") for i, p in enumerate(prompts)]
    return Job("completion", model, rows, stop, logprobs)


def _pieces(tokenizer, tokens: list[int]) -> list[str]:
    """The text each token adds to the decoded prefix (multi-byte characters land on their last token)."""
    pieces, previous = [], ""
    for t in range(len(tokens)):
        text = decode(tokenizer, tokens[: t + 1])
        pieces.append(text[len(previous):] if text.startswith(previous) else text)
        previous = text
    return pieces


def _finish(tokenizer, c: Completion, stop: tuple[str, ...]):
    """(text, finish_reason, kept tokens) after cutting at the first stop string."""
    text = decode(tokenizer, c.tokens)
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    if not cuts:
        return text, c.finish_reason, len(c.tokens)
    cut = min(cuts)
    kept, length = 0, 0
    for piece in _pieces(tokenizer, c.tokens):
        if length >= cut:
            break
        length += len(piece)
        kept += 1
    return text[:cut], "stop", kept


def _usage(rows: list[Row], completions: list[Completion]) -> dict:
    prompt = sum(len(r.prompt) for r in rows)
    completion = sum(len(c.tokens) for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def chat_response(job: Job, completions: list[Completion], tokenizer) -> dict:
    c = completions[0]
    text, finish, kept = _finish(tokenizer, c, job.stop)
    logprobs = None
    if job.logprobs is not None:
        tokens, pieces = c.tokens[:kept], _pieces(tokenizer, c.tokens[:kept])
        entry = lambda tok, piece, lp: {"token": piece, "logprob": lp,
                                        "bytes": list(piece.encode()), "id": tok}
        logprobs = {"content": [
            {**entry(tok, piece, lp), "top_logprobs": [
                entry(alt, tokenizer.decode([alt]), alt_lp) for alt, alt_lp in top[: job.logprobs]]}
            for tok, piece, lp, top in zip(tokens, pieces, c.logprobs, c.top_logprobs)]}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": job.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": logprobs, "finish_reason": finish}],
        "usage": _usage(job.rows, completions),
    }


def completion_response(job: Job, completions: list[Completion], tokenizer) -> dict:
    choices = []
    for index, c in enumerate(completions):
        text, finish, kept = _finish(tokenizer, c, job.stop)
        logprobs = None
        if job.logprobs is not None:
            pieces = _pieces(tokenizer, c.tokens[:kept])
            offsets, at = [], 0
            for piece in pieces:
                offsets.append(at)
                at += len(piece)
            top = [{tokenizer.decode([alt]): lp for alt, lp in t[: job.logprobs]}
                   for t in c.top_logprobs[:kept]]
            logprobs = {"tokens": pieces, "token_logprobs": c.logprobs[:kept],
                        "top_logprobs": top, "text_offset": offsets}
        choices.append({"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish})
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
            "created": int(time.time()), "model": job.model, "choices": choices,
            "usage": _usage(job.rows, completions)}


def models_response(served: tuple[str, ...], max_len: int) -> dict:
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "distil-jax",
         "max_model_len": max_len} for name in served]}
