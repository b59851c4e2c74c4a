"""A chat answer's per-token log-probs (`choices[0].logprobs.content`) in the compact form the
journal and the curated records keep: one entry per answer token, `{token, logprob, id?,
top_logprobs: [{token, logprob, id?}]}` (`bytes` dropped; `id` kept when the server sends it,
as `distil-jax serve` does)."""

from __future__ import annotations


class MalformedLogprobs(ValueError):
  pass


def _alternative(entry) -> dict:
  token, logprob = entry["token"], entry["logprob"]
  if (
      not isinstance(token, str)
      or isinstance(logprob, bool)
      or not isinstance(logprob, (int, float))
  ):
    raise TypeError(f"log-prob entry {str(entry)[:80]}")
  out = {"token": token, "logprob": float(logprob)}
  if isinstance(entry.get("id"), int) and not isinstance(entry["id"], bool):
    out["id"] = entry["id"]
  return out


def token_logprobs(logprobs) -> tuple[dict, ...] | None:
  """`choices[0].logprobs` -> the compact entries, or None when the server sent none;
  `MalformedLogprobs` when they do not have the chat API's shape."""
  if logprobs is None:
    return None
  try:
    if logprobs["content"] is None:
      return None
    return tuple(
        {
            **_alternative(entry),
            "top_logprobs": [_alternative(alt) for alt in entry.get("top_logprobs") or []],
        }
        for entry in logprobs["content"]
    )
  except (KeyError, TypeError, AttributeError) as e:
    raise MalformedLogprobs(f"logprobs: {type(e).__name__}: {e}") from None
