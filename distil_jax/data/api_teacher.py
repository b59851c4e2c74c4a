"""Gray-box teacher: prompt log-probs from an OpenAI-compatible `/completions` endpoint -> the
offline teacher store's records (`distil_jax.data.teacher_store.StoreRecord`).

The endpoint is sent an example's exact token ids with `echo: true, logprobs: K, max_tokens: 1,
temperature: 0` and answers, for every prompt token i >= 1, the token's string, its log-prob
and a dict {token string: log-prob} of the K most likely tokens at i given tokens < i. The
store's distribution at input position t (predicting token t + 1) is therefore echo entry t + 1.

Token strings are mapped back to ids with the shared tokenizer (`TokenMap`):
- `token_id:N` (vLLM's `return_tokens_as_token_ids`) is id N;
- otherwise the string must be the decoding of exactly one vocabulary id. A string several ids
  decode to (partial UTF-8 shown as U+FFFD, 1,347 of Qwen2.5's ids) is *ambiguous*: that
  alternative is dropped, and its mass lands in the tail; a string no id decodes to means the
  server uses another tokenizer: refused.
The realised (echoed) token at every sent position must be the id that was sent: its string is
that id's own decoding, or the text it adds to the decoded prefix (servers that detokenise
incrementally, ours among them, report a multi-byte character on its last token), or
`token_id:<the id>`. Anything else is refused, naming the example id and position (a server
that re-tokenised the prompt, or another tokenizer).

Per stored position: the mappable alternatives, best first, at most K; fewer than K are padded
with distinct ids outside them at log-prob -inf (zero teacher mass); `tail = log(1 - sum_k
exp(logprob_k))` in float64 (-inf when the kept alternatives hold all the mass).

Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from distil_jax.data import teacher_store

TOKEN_ID_PREFIX = "token_id:"
AMBIGUOUS = -1


class EchoError(ValueError):
  """An answer that cannot be turned into a record: names the example, position, endpoint."""


_CACHE: dict[tuple, "TokenMap"] = {}


class TokenMap:
  """Token string -> id over the first `vocab_size` ids of `tokenizer` (AMBIGUOUS if several)."""

  @classmethod
  def cached(cls, tokenizer, vocab_size: int, fingerprint: str) -> "TokenMap":
    """One map per tokenizer fingerprint and process (decoding 151k ids takes ~2 s)."""
    key = (fingerprint, vocab_size)
    if key not in _CACHE:
      _CACHE[key] = cls(tokenizer, vocab_size)
    return _CACHE[key]

  def __init__(self, tokenizer, vocab_size: int):
    self.vocab_size = vocab_size
    self._decode = tokenizer.decode
    self.strings = tokenizer.batch_decode([[i] for i in range(vocab_size)])
    ids: dict[str, int] = {}
    for i, s in enumerate(self.strings):
      ids[s] = AMBIGUOUS if s in ids else i
    self._ids = ids

  def lookup(self, s: str) -> int | None:
    """The id of `s`, AMBIGUOUS, or None when no id (of the first `vocab_size`) decodes to it.
    `token_id:N` with N outside the vocabulary is AMBIGUOUS too (a padding row: no text)."""
    if s.startswith(TOKEN_ID_PREFIX):
      try:
        n = int(s[len(TOKEN_ID_PREFIX) :])
      except ValueError:
        return None
      return n if 0 <= n < self.vocab_size else AMBIGUOUS
    return self._ids.get(s)

  def is_realised(self, s: str, ids: np.ndarray, i: int) -> bool:
    """Is `s` a report of token `ids[i]` at position i (see the module docstring)?"""
    token = int(ids[i])
    if s.startswith(TOKEN_ID_PREFIX):
      return s == f"{TOKEN_ID_PREFIX}{token}"
    if token < self.vocab_size and s == self.strings[token]:
      return True
    # Incremental detokenisation: the text token i adds to the decoded prefix (the whole
    # text when the prefix ended in a partial character), as `distil-jax serve` reports it.
    before = self._decode(ids[:i].tolist())
    text = self._decode(ids[: i + 1].tolist())
    return s == (text[len(before) :] if text.startswith(before) else text)


@dataclasses.dataclass
class Counts:
  """What the mapping did, summed over records (goes to the store manifest)."""

  positions: int = 0
  alternatives_kept: int = 0
  alternatives_ambiguous: int = 0  # dropped into the tail
  positions_padded: int = 0  # fewer than K mappable alternatives
  padded_slots: int = 0

  def add(self, other: "Counts") -> None:
    for f in dataclasses.fields(self):
      setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def request_body(model: str, ids: np.ndarray, top_k: int, token_ids: bool = False) -> dict:
  """`token_ids`: ask for `token_id:N` strings (vLLM's `return_tokens_as_token_ids`), which
  makes every alternative mappable; servers without the field refuse it (ours: a 400)."""
  body = {
      "model": model,
      "prompt": [int(x) for x in ids],
      "echo": True,
      "logprobs": top_k,
      "max_tokens": 1,
      "temperature": 0,
  }
  if token_ids:
    body["return_tokens_as_token_ids"] = True
  return body


def prompt_length(ids: np.ndarray, positions: np.ndarray) -> int:
  """Tokens to send: up to the last trained target (t + 1 for the last stored t)."""
  return int(positions[-1]) + 2 if len(positions) else min(len(ids), 1)


def alternative_id(token_map: TokenMap, s: str, lp, where: str) -> int:
  """The id (or AMBIGUOUS) of alternative `s` at log-prob `lp`; EchoError, naming `where`, for
  a string no id decodes to (another tokenizer) or a value that is no log-probability."""
  i = token_map.lookup(s)
  if i is None:
    raise EchoError(
        f"{where}: alternative {s!r} is no token of the data's tokenizer (the server uses "
        "another one)"
    )
  if isinstance(lp, bool) or not isinstance(lp, (int, float)) or math.isnan(lp) or lp > 1e-6:
    raise EchoError(f"{where}: log-prob {lp!r} of {s!r} is not a log-probability")
  return i


def top_k_row(
    kept: dict[int, float], top_k: int, vocab_size: int, counts: Counts
) -> tuple[np.ndarray, np.ndarray, float]:
  """(ids int32 [K], log-probs float64 [K], tail) of one position from its mappable
  alternatives {id: log-prob}: the best K, padded with distinct unused ids at -inf; `counts`
  adds what was kept and padded."""
  ids, lps = np.zeros(top_k, np.int32), np.full(top_k, -np.inf, np.float64)
  best = sorted(kept.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
  for j, (i, lp) in enumerate(best):
    ids[j], lps[j] = i, min(lp, 0.0)
  counts.alternatives_kept += len(best)
  if len(best) < top_k:
    counts.positions_padded += 1
    counts.padded_slots += top_k - len(best)
    used = {i for i, _ in best}
    spare = (i for i in range(vocab_size) if i not in used)
    for j in range(len(best), top_k):
      ids[j] = next(spare)
  mass = float(np.exp(lps).sum())
  return ids, lps, math.log1p(-mass) if mass < 1.0 else -math.inf


def to_record(
    answer: dict,
    *,
    example_id: str,
    index: int,
    ids: np.ndarray,
    mask: np.ndarray,
    max_length: int,
    top_k: int,
    token_map: TokenMap,
    logprob_dtype: np.dtype,
    where: str,
) -> tuple[teacher_store.StoreRecord, Counts]:
  """One store record from one `/completions` echo answer for `ids[:prompt_length]`."""
  positions = teacher_store.target_positions(mask, max_length)
  sent = prompt_length(ids, positions)
  name = f"example {example_id!r} (record {index})"
  try:
    logprobs = answer["choices"][0]["logprobs"]
    tokens, top = logprobs["tokens"], logprobs["top_logprobs"]
  except (KeyError, IndexError, TypeError):
    raise EchoError(
        f"{where}: the answer for {name} has no choices[0].logprobs.tokens / "
        "top_logprobs (does the server support echo with logprobs?)"
    ) from None
  if len(tokens) < sent or len(top) < sent:
    raise EchoError(
        f"{where}: the answer for {name} echoes {len(tokens)} tokens, "
        f"{sent} were sent (the prompt was not echoed whole)"
    )
  for i in range(sent):
    if not isinstance(tokens[i], str) or not token_map.is_realised(tokens[i], ids, i):
      raise EchoError(
          f"{where}: {name}, position {i}: the server echoed {tokens[i]!r} where token "
          f"{int(ids[i])} ({token_map.strings[int(ids[i])]!r}) was sent; it re-tokenised "
          "the prompt or uses another tokenizer"
      )
  m = len(positions)
  out_ids = np.zeros((m, top_k), np.int32)
  out_lp = np.full((m, top_k), -np.inf, np.float64)
  tail = np.zeros(m, np.float64)
  counts = Counts(positions=m)
  for row, t in enumerate(positions.tolist()):
    entry = top[t + 1]
    if not isinstance(entry, dict):
      raise EchoError(
          f"{where}: {name}, position {t + 1}: top_logprobs is "
          f"{type(entry).__name__}, expected an object of token -> log-prob"
      )
    kept: dict[int, float] = {}
    for s, lp in entry.items():
      i = alternative_id(token_map, s, lp, f"{where}: {name}, position {t + 1}")
      if i == AMBIGUOUS:
        counts.alternatives_ambiguous += 1
      else:
        kept[i] = max(float(lp), kept.get(i, -math.inf))
    out_ids[row], out_lp[row], tail[row] = top_k_row(kept, top_k, token_map.vocab_size, counts)
  rec = teacher_store.StoreRecord(
      example_id=example_id,
      index=index,
      sha256=teacher_store.token_hash(ids),
      num_tokens=len(ids),
      positions=positions,
      topk_ids=out_ids,
      topk_logprobs=out_lp.astype(logprob_dtype),
      tail=tail.astype(np.float32),
  )
  return rec, counts


def store_settings(
    data_dir: str,
    data_manifest: dict,
    *,
    tokenizer_path: str | None,
    top_k: int,
    logprob_dtype: str,
    max_length: int | None,
    unit_size: int,
    teacher: dict,
):
  """(the shared tokenizer, the settings a store from returned log-probs depends on: a resumed
  run must match them). The tokenizer must be the data's (fingerprint), K in [1, vocab)."""
  import hashlib
  from pathlib import Path

  from distil_jax.data import shards
  from distil_jax.tokenizer import load_tokenizer, tokenizer_fingerprint

  data_tok = data_manifest["tokenizer"]
  source = tokenizer_path or (data_tok["id"] if Path(data_tok["id"]).is_dir() else None)
  tokenizer = load_tokenizer(source)
  fingerprint = tokenizer_fingerprint(tokenizer)
  if fingerprint != data_tok["fingerprint"]:
    raise ValueError(
        f"the tokenizer {source or 'built in'} (fingerprint {fingerprint[:16]}) is "
        f"not the data's ({data_dir}, tokenizer {data_tok['id']}, fingerprint "
        f"{data_tok['fingerprint'][:16]}); pass --tokenizer"
    )
  vocab = int(data_tok["vocab_size"])
  if not 0 < top_k < vocab:
    raise ValueError(f"--top_k {top_k} must be in [1, {vocab})")
  max_length = max_length or int(data_manifest["max_length"])
  if max_length < 2:
    raise ValueError(f"--max_length must be >= 2, got {max_length}")
  manifest_bytes = (Path(data_dir) / shards.MANIFEST).read_bytes()
  return tokenizer, {
      "top_k": top_k,
      "logprob_dtype": logprob_dtype,
      "tail_dtype": "float32",
      "vocab_columns": vocab,
      "max_length": max_length,
      "unit_size": unit_size,
      "teacher": teacher,
      "tokenizer": {"fingerprint": fingerprint, "data_id": data_tok["id"]},
      "data": {
          "path": str(Path(data_dir).resolve()),
          "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
          "examples": int(data_manifest["counts"]["examples"]),
      },
  }
