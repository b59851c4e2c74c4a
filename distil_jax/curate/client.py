"""Async client for one OpenAI-compatible `/chat/completions` endpoint: limits, retries, journal.

Requests go through httpx's protocol engine (httpcore HTTP/1.1 connections, h11, TLS) but not
through `httpx.AsyncClient` or httpcore's connection pool: one big AsyncClient pool degrades badly
with size (ANCHORS.md: 512 in flight in one pool reach 7% of the limit) and even many small ones
cost ~2.2 ms of client CPU per request, which caps a single event loop at ~450 requests/s.
`transport.ConnectionPool` is a plain free list of keep-alive connections (see transport.py for
the profile). A request's answer is journaled (fsync'd) before it is returned; a request already in
the journal is never sent again. Only answers and final refusals (`retry.FINAL_REFUSALS`) are
journaled: any other failure is sent again by a rerun.

Circuit breaker: every failed attempt (transport error, timeout, 5xx, 429, a non-final 4xx) extends
a streak that any answer ends. When the streak reaches `breaker_failures` and either no answer came
for `breaker_window_s` or every failure in it was a 4xx refusal, the endpoint is declared down
(`endpoint_down:<last cause>`, naming the URL): requests waiting or backing off return at once and
the pipeline stops with a non-zero exit instead of retrying a dead URL for the whole retry budget.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import importlib.util
import json
import os
import random
import ssl
import sys
import time
import zlib

import httpcore

from distil_jax.curate import retry
from distil_jax.curate.chat_logprobs import MalformedLogprobs, token_logprobs
from distil_jax.curate.config import EndpointConfig
from distil_jax.curate.journal import Journal, request_key
from distil_jax.curate.rate_limit import TokenBucket
from distil_jax.curate.transport import ConnectionPool

USER_AGENT = b"distil-jax-curate (httpcore/" + httpcore.__version__.encode() + b")"


@dataclasses.dataclass(frozen=True)
class Completion:
  key: str
  content: str
  finish_reason: str
  prompt_tokens: int
  completion_tokens: int
  # `choices[0].logprobs.content` when the request asked for log-probs: one entry per answer
  # token, {token, logprob, id?, top_logprobs: [{token, logprob, id?}]} (`id`: our server's).
  logprobs: tuple[dict, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Failure:
  key: str
  reason: str  # e.g. content_filter, unauthorized, retries_exhausted:http_503
  detail: str


@dataclasses.dataclass
class EndpointStats:
  sent: int = 0
  completed: int = 0
  from_journal: int = 0
  prompt_tokens: int = 0
  completion_tokens: int = 0
  retries: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  refused: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def as_dict(self) -> dict:
    return {
        "sent": self.sent,
        "completed": self.completed,
        "from_journal": self.from_journal,
        "prompt_tokens": self.prompt_tokens,
        "completion_tokens": self.completion_tokens,
        "retries": dict(sorted(self.retries.items())),
        "refused": dict(sorted(self.refused.items())),
    }


class _Retryable(Exception):

  def __init__(self, reason: str, detail: str = "", retry_after_s: float | None = None):
    super().__init__(reason)
    self.reason, self.detail, self.retry_after_s = reason, detail, retry_after_s


def _estimated_tokens(messages: list[dict], max_tokens: int) -> float:
  return sum(len(m.get("content") or "") for m in messages) / 3.0 + max_tokens


def _completion_from_body(key: str, body: bytes) -> Completion:
  try:
    data = json.loads(body)
    choice = data["choices"][0]
    content = choice["message"].get("content") or ""
    finish_reason = choice.get("finish_reason") or "stop"
    usage = data.get("usage") or {}
    prompt_tokens, completion_tokens = int(usage.get("prompt_tokens", 0)), int(
        usage.get("completion_tokens", 0)
    )
  except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
    raise _Retryable("malformed_response", f"{type(e).__name__}: {body[:120]!r}") from None
  if not isinstance(content, str):
    raise _Retryable("malformed_response", "message.content is not a string")
  try:
    logprobs = token_logprobs(choice.get("logprobs"))
  except MalformedLogprobs as e:
    raise _Retryable("malformed_response", str(e)) from None
  return Completion(key, content, finish_reason, prompt_tokens, completion_tokens, logprobs)


def _remember_that_sniffio_is_missing() -> None:
  """httpcore runs `import sniffio` on every request; when it is not installed, each failed import scans
  sys.path again (measured: ~9 ms of client CPU per request). A None entry makes the import fail at once,
  and httpcore then assumes asyncio, which is what we run."""
  if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None


class TeacherClient:
  """Use as `async with TeacherClient(endpoint, journal) as client: await client.complete(...)`."""

  def __init__(self, endpoint: EndpointConfig, journal: Journal, *, seed: int = 0):
    self.endpoint = endpoint
    self.journal = journal
    self.stats = EndpointStats()
    self.fatal: Failure | None = None
    self._api_key = os.environ.get(endpoint.api_key_env, "") if endpoint.api_key_env else ""
    if endpoint.api_key_env and not self._api_key:
      raise ValueError(
          f"endpoint {endpoint.name!r}: environment variable {endpoint.api_key_env} is not set"
      )
    self._url = endpoint.base_url + "/chat/completions"
    self._in_flight = asyncio.Semaphore(endpoint.max_in_flight)
    self._requests = TokenBucket(endpoint.requests_per_minute)
    self._tokens = TokenBucket(endpoint.tokens_per_minute)
    self._rng = random.Random(seed)  # jitter only: it never changes what is written
    self._target = httpcore.URL(self._url)
    self._pool: ConnectionPool | None = None
    self._headers: list[tuple[bytes, bytes]] = []
    timeout = endpoint.timeout_s
    self._extensions = {
        "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    }
    self._streak = 0  # failed attempts since the last answer
    self._refusals_only = True  # every failure in the streak was a 4xx refusal
    self._last_answer = time.monotonic()
    self._down: asyncio.Event | None = None

  def __repr__(self) -> str:  # never shows the key
    return f"TeacherClient({self.endpoint.name!r}, {self._url!r})"

  async def __aenter__(self) -> "TeacherClient":
    _remember_that_sniffio_is_missing()
    self._down = asyncio.Event()
    self._last_answer = time.monotonic()
    origin = self._target.origin
    tls = ssl.create_default_context() if origin.scheme == b"https" else None
    self._pool = ConnectionPool(origin, ssl_context=tls)
    default_port = {b"http": 80, b"https": 443}.get(origin.scheme)
    host = (
        origin.host if origin.port in (None, default_port) else origin.host + b":%d" % origin.port
    )
    # The headers httpx would send, built once (the key stays out of repr and logs).
    self._headers = [
        (b"Host", host),
        (b"Accept", b"application/json"),
        (b"Accept-Encoding", b"gzip, deflate"),
        (b"Connection", b"keep-alive"),
        (b"User-Agent", USER_AGENT),
        (b"Content-Type", b"application/json"),
    ]
    if self._api_key:
      self._headers.append((b"Authorization", f"Bearer {self._api_key}".encode()))
    return self

  @property
  def connections_opened(self) -> int:
    return self._pool.opened if self._pool is not None else 0

  async def __aexit__(self, *exc) -> None:
    if self._pool is not None:
      await self._pool.aclose()

  async def complete(self, messages: list[dict], sampling: dict) -> Completion | Failure:
    key = request_key(
        base_url=self.endpoint.base_url,
        model=self.endpoint.model,
        messages=messages,
        sampling=sampling,
    )
    done = self.journal.get(key)
    if done is not None:
      self.stats.from_journal += 1
      return self._from_entry(done)
    if self.fatal is not None:
      return self._gave_up(key)
    body = json.dumps(
        {"model": self.endpoint.model, "messages": messages, **sampling}, ensure_ascii=False
    ).encode()
    async with self._in_flight:
      outcome = await self._send_with_retries(
          key, body, _estimated_tokens(messages, sampling.get("max_tokens", 0))
      )
    if isinstance(outcome, Failure) and not retry.is_final(outcome.reason):
      if retry.stops_the_endpoint(outcome.reason):
        self._stop(outcome)
      return outcome  # not journaled: a rerun after the server is fixed sends it again
    entry = self._to_entry(outcome)
    await self.journal.append(entry)
    if isinstance(outcome, Completion):
      self.stats.completed += 1
      self.stats.prompt_tokens += outcome.prompt_tokens
      self.stats.completion_tokens += outcome.completion_tokens
    return outcome

  def _stop(self, failure: Failure) -> None:
    self.fatal = self.fatal or failure
    if self._down is not None:
      self._down.set()

  def _answered(self) -> None:
    self._streak, self._refusals_only, self._last_answer = 0, True, time.monotonic()

  def _failed_attempt(self, reason: str, detail: str, *, refusal: bool) -> None:
    self._streak += 1
    self._refusals_only = self._refusals_only and refusal
    quiet_s = time.monotonic() - self._last_answer
    ep = self.endpoint
    if (
        self.fatal is None
        and self._streak >= ep.breaker_failures
        and (self._refusals_only or quiet_s >= ep.breaker_window_s)
    ):
      self._stop(
          Failure(
              "",
              f"{retry.ENDPOINT_DOWN}:{reason}",
              f"{self._url}: {self._streak} failed attempts in a row, no answer for {quiet_s:.0f} s; "
              f"last: {reason} {detail}".strip(),
          )
      )

  def _gave_up(self, key: str) -> Failure:
    return Failure(key, self.fatal.reason, self.fatal.detail)

  async def _sleep_unless_down(self, seconds: float) -> None:
    if self._down is None:  # used without `async with`
      await asyncio.sleep(seconds)
      return
    try:
      await asyncio.wait_for(self._down.wait(), seconds)
    except asyncio.TimeoutError:
      pass

  def _from_entry(self, entry: dict) -> Completion | Failure:
    if entry["kind"] == "failure":
      self.stats.refused[entry["reason"]] += 1
      return Failure(entry["key"], entry["reason"], entry["detail"])
    self.stats.prompt_tokens += entry["prompt_tokens"]
    self.stats.completion_tokens += entry["completion_tokens"]
    logprobs = entry.get("logprobs")
    return Completion(
        entry["key"],
        entry["content"],
        entry["finish_reason"],
        entry["prompt_tokens"],
        entry["completion_tokens"],
        None if logprobs is None else tuple(logprobs),
    )

  @staticmethod
  def _to_entry(outcome: Completion | Failure) -> dict:
    if isinstance(outcome, Failure):
      return {
          "key": outcome.key,
          "kind": "failure",
          "reason": outcome.reason,
          "detail": outcome.detail,
      }
    entry = {
        "key": outcome.key,
        "kind": "completion",
        **{
            f.name: getattr(outcome, f.name)
            for f in dataclasses.fields(Completion)
            if f.name not in ("key", "logprobs")
        },
    }
    if outcome.logprobs is not None:  # absent otherwise: journal lines as before log-probs
      entry["logprobs"] = list(outcome.logprobs)
    return entry

  async def _send_with_retries(
      self, key: str, body: bytes, estimate: float
  ) -> Completion | Failure:
    ep = self.endpoint
    deadline = time.monotonic() + ep.max_retry_s
    attempt = 0
    while True:
      if self.fatal is not None:
        return self._gave_up(key)
      attempt += 1
      await self._requests.acquire(1)
      await self._tokens.acquire(estimate)
      if self.fatal is not None:
        return self._gave_up(key)
      try:
        completion = await self._send_once(key, body)
        self._answered()
        self._tokens.charge(completion.prompt_tokens + completion.completion_tokens - estimate)
        return completion
      except _Retryable as e:
        self.stats.retries[e.reason] += 1
        self._failed_attempt(e.reason, e.detail, refusal=False)
        wait = retry.backoff_seconds(
            attempt,
            base_s=ep.backoff_base_s,
            max_s=ep.backoff_max_s,
            retry_after_s=e.retry_after_s,
            rng=self._rng,
        )
        if attempt >= ep.max_attempts or time.monotonic() + wait > deadline:
          return Failure(key, f"retries_exhausted:{e.reason}", e.detail)
        await self._sleep_unless_down(wait)
      except _Refused as e:
        self.stats.refused[e.failure.reason] += 1
        if retry.is_final(e.failure.reason):
          self._answered()  # the server understood the request and answered it
        else:
          self._failed_attempt(e.failure.reason, e.failure.detail, refusal=True)
        return e.failure

  async def _send_once(self, key: str, body: bytes) -> Completion:
    self.stats.sent += 1
    request = httpcore.Request(
        b"POST",
        self._target,
        content=body,
        extensions=self._extensions,
        headers=[
            *self._headers,
            (b"Content-Length", b"%d" % len(body)),
            (b"X-Client-Request-Id", key.encode()),
        ],
    )
    conn = self._pool.acquire()
    try:
      response = await conn.handle_async_request(request)
      try:
        raw = await response.aread()
      finally:
        await response.aclose()
    except httpcore.TimeoutException as e:
      raise _Retryable("timeout", type(e).__name__) from None
    except (
        httpcore.NetworkError,
        httpcore.ProtocolError,
        httpcore.UnsupportedProtocol,
        httpcore.ProxyError,
    ) as e:  # refused, reset, dropped or truncated mid-body
      raise _Retryable("connection", type(e).__name__) from None
    finally:
      self._pool.release(conn)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
    try:
      content = _decoded(raw, headers.get("content-encoding", ""))
    except zlib.error as e:
      raise _Retryable("malformed_response", f"content-encoding: {e}") from None
    if response.status == 200:
      return _completion_from_body(key, content)
    text = content.decode("utf-8", errors="replace")[:300]
    if retry.is_retryable_status(response.status):
      raise _Retryable(f"http_{response.status}", text, retry.retry_after_seconds(headers))
    raise _Refused(Failure(key, retry.refusal_reason(response.status, text), text))


def _decoded(raw: bytes, encoding: str) -> bytes:
  """Undoes the Content-Encoding we accept (gzip, deflate), as httpx would."""
  for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
    if coding in ("gzip", "x-gzip"):
      raw = zlib.decompress(raw, zlib.MAX_WBITS | 16)
    elif coding == "deflate":
      try:
        raw = zlib.decompress(raw)
      except zlib.error:  # raw deflate without the zlib header, as some servers send
        raw = zlib.decompress(raw, -zlib.MAX_WBITS)
    elif coding != "identity":
      raise zlib.error(f"unsupported content-encoding {coding!r}")
  return raw


class _Refused(Exception):

  def __init__(self, failure: Failure):
    super().__init__(failure.reason)
    self.failure = failure
