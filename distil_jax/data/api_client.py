"""The HTTP side of `distil-jax api-logits`: POSTs to an OpenAI-compatible `/completions` with
bounded concurrency, retries and clear failures. No JAX.

- At most `concurrency` requests in flight (one httpx.AsyncClient, keep-alive connections).
- A 5xx, a 429 or a transport error (refused, reset, timeout) is retried `retries` times with
  exponential backoff (`backoff_s * 2**attempt`, at most 30 s; a numeric `Retry-After` wins).
- Any other 4xx is final at once; so is running out of retries. Either raises `ApiError` naming
  the endpoint, the example and what the server said.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import httpx

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class ApiError(RuntimeError):
  """The endpoint refused or could not be reached: the message names it."""


def completions_url(endpoint: str) -> str:
  """`http://host:port/v1` -> `.../v1/completions`; a URL already ending so is kept."""
  base = endpoint.rstrip("/")
  return base if base.endswith("/completions") else f"{base}/completions"


@dataclasses.dataclass
class Traffic:
  requests: int = 0  # answered 200
  attempts: int = 0  # every try, retries included
  retries: int = 0
  response_bytes: int = 0


class CompletionsClient:

  def __init__(
      self,
      endpoint: str,
      *,
      concurrency: int = 8,
      retries: int = 5,
      backoff_s: float = 0.5,
      timeout_s: float = 600.0,
      api_key: str | None = None,
  ):
    self.url = completions_url(endpoint)
    self.retries, self.backoff_s = retries, backoff_s
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    self._client = httpx.AsyncClient(
        headers=headers,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 30.0)),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )
    self._slots = asyncio.Semaphore(concurrency)
    self.traffic = Traffic()

  async def aclose(self) -> None:
    await self._client.aclose()

  async def post(self, body: dict, what: str) -> dict:
    """The JSON answer to `body`; `what` names the example in errors."""
    async with self._slots:
      for attempt in range(self.retries + 1):
        self.traffic.attempts += 1
        last = attempt == self.retries
        try:
          response = await self._client.post(self.url, json=body)
        except httpx.TransportError as e:
          if last:
            raise ApiError(
                f"endpoint {self.url} is unreachable for {what} after "
                f"{attempt + 1} attempts ({type(e).__name__}: {e})"
            ) from None
          await self._wait(attempt, None)
          continue
        if response.status_code == 200:
          self.traffic.requests += 1
          self.traffic.response_bytes += len(response.content)
          try:
            return response.json()
          except json.JSONDecodeError:
            raise ApiError(
                f"endpoint {self.url} answered {what} with a body that is "
                f"not JSON: {response.text[:200]!r}"
            ) from None
        if response.status_code in RETRY_STATUS and not last:
          await self._wait(attempt, response.headers.get("retry-after"))
          continue
        tried = f" after {attempt + 1} attempts" if response.status_code in RETRY_STATUS else ""
        raise ApiError(
            f"endpoint {self.url} answered {response.status_code} to {what}"
            f"{tried}: {response.text[:300]}"
        )
    raise AssertionError("unreachable")

  async def _wait(self, attempt: int, retry_after: str | None) -> None:
    self.traffic.retries += 1
    delay = min(self.backoff_s * 2**attempt, 30.0)
    if retry_after:
      try:
        delay = min(float(retry_after), 60.0)
      except ValueError:
        pass
    await asyncio.sleep(delay)
