"""Which teacher failures are worth retrying, and how long to wait before the next attempt."""

from __future__ import annotations

import email.utils
import random
import time

RETRYABLE_STATUS = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
  return status in RETRYABLE_STATUS or 500 <= status <= 599


def refusal_reason(status: int, body: str) -> str:
  """A stable reason for a non-retryable HTTP error, used in counts and the journal."""
  lowered = body.lower()
  if status == 400 and (
      "maximum context length" in lowered or "context_length_exceeded" in lowered
  ):
    return "context_length_exceeded"
  if status == 400 and (
      "content_filter" in lowered
      or "content filter" in lowered
      or "data_inspection_failed" in lowered
      or "content management policy" in lowered
  ):
    return "content_filter"
  if status == 402 or "insufficient" in lowered and ("balance" in lowered or "quota" in lowered):
    return "insufficient_balance"
  if status == 401:
    return "unauthorized"
  if status == 403:
    return "forbidden"
  return f"http_{status}"


# Refusals that say nothing about the request itself: every later request would fail the same way,
# and a rerun after fixing the key or the balance must send them again, so they are not journaled.
ENDPOINT_FATAL = frozenset({"insufficient_balance", "unauthorized", "forbidden"})

# The only failures that are final by the API's own semantics (the same request is refused again
# whatever the server's state), so the only ones journaled. Every other 4xx (404 while a model name
# is wrong or still loading, 400/422 from a misconfigured server, ...) is answered again by a rerun.
FINAL_REFUSALS = frozenset({"content_filter", "context_length_exceeded"})

# Prefix of the reason given when an endpoint's circuit breaker trips (see TeacherClient).
ENDPOINT_DOWN = "endpoint_down"


def is_final(reason: str) -> bool:
  return reason in FINAL_REFUSALS


def stops_the_endpoint(reason: str) -> bool:
  return reason in ENDPOINT_FATAL or reason.startswith(ENDPOINT_DOWN)


def retry_after_seconds(headers) -> float | None:
  """`retry-after-ms` (OpenAI, Azure) wins over `Retry-After` (seconds or an HTTP date)."""
  ms = headers.get("retry-after-ms")
  if ms is not None:
    try:
      return max(0.0, float(ms) / 1000.0)
    except ValueError:
      pass
  value = headers.get("retry-after")
  if value is None:
    return None
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    when = email.utils.parsedate_to_datetime(value)
  except (TypeError, ValueError):
    return None
  return max(0.0, when.timestamp() - time.time())


def backoff_seconds(
    attempt: int, *, base_s: float, max_s: float, retry_after_s: float | None, rng: random.Random
) -> float:
  """Exponential backoff with full jitter; a server's Retry-After is a floor, never shortened."""
  jittered = rng.uniform(0.5, 1.0) * min(max_s, base_s * 2 ** (attempt - 1))
  if retry_after_s is not None:
    return max(retry_after_s, min(jittered, retry_after_s + base_s))
  return jittered
