"""Chat-time teacher log-probs (curated `teacher_logprobs`) -> offline teacher store records.

`refine` with `top_logprobs = K > 0` (docs/chatlp.md) asks the teacher to answer the record's own
conversation and keeps the chat API's per-token entries of its answer, `{token, logprob, id?,
top_logprobs: [{token, logprob, id?}]}`: entry i is the teacher's distribution at the answer's
token i given the prompt and answer tokens < i. `prepare` renders that very conversation with
the chat template, so in the prepared example (one assistant turn, its mask 1 on the content
tokens c_0..c_{n-1} and the closing `<|im_end|>`) entry i is the store's distribution at input
position pos(c_i) - 1 (predicting c_i).

Entry i must realise content token i: its `id` when the server sends one (ours does), else its
string by `api_teacher.TokenMap.is_realised` (the token's own decoding or the text it adds); and
the token after the entries must be `<|im_end|>` (unless the example was truncated before it).
Otherwise the answer re-tokenised to other ids: `ChatLogprobError` names the example and position.
Alternatives map as in `api_teacher` (by `id` when sent, else by string; an ambiguous string goes
to the tail), the best K, padded at -inf.

No chat API scores the stop token, so the position predicting `<|im_end|>` is left out: the store
is *partial* (`partial_positions: true` in its manifest), and the join gives that position
`kd_mask` 0 (trained on its hard label alone). Nothing here imports JAX.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from distil_jax.data import api_teacher, teacher_store

END_TOKEN = "<|im_end|>"


class ChatLogprobError(ValueError):
  """Entries that do not fit the prepared example: the message names the example and position."""


def content_span(ids: np.ndarray, mask: np.ndarray, name: str) -> int:
  """Index of the first content token of the example's one assistant turn."""
  trained = np.flatnonzero(np.asarray(mask))
  if not len(trained):
    raise ChatLogprobError(f"{name}: no assistant token")
  if trained[-1] - trained[0] + 1 != len(trained):
    raise ChatLogprobError(
        f"{name}: several assistant turns; chat log-probs cover one answer (a curated record)"
    )
  return int(trained[0])


def first_mismatch(
    entries: Sequence[dict], ids: np.ndarray, start: int, token_map: api_teacher.TokenMap
) -> int | None:
  """The first content index i whose entry does not realise `ids[start + i]` (or, past the
  entries, whose token is not `<|im_end|>`); None when every token present matches."""
  content = np.asarray(ids[start : start + len(entries)])
  for i, entry in enumerate(entries[: len(content)]):
    if "id" in entry:
      if entry["id"] != int(content[i]):
        return i
    elif not token_map.is_realised(entry["token"], content, i):
      return i
  end = start + len(entries)
  if end < len(ids) and token_map.strings[int(ids[end])] != END_TOKEN:
    return len(entries)
  return None


def describe(entries: Sequence[dict], ids: np.ndarray, start: int, i: int, token_map) -> str:
  """What the mismatch at content index i is, for an error message."""
  data = int(ids[start + i]) if start + i < len(ids) else None
  have = token_map.strings[data] if data is not None else "(end of example)"
  if i >= len(entries):
    return f"the teacher's answer ends there but the data has token {data} ({have!r})"
  got = entries[i]
  got_id = f" (id {got['id']})" if "id" in got else ""
  return (
      f"the teacher's token is {got['token']!r}{got_id} where the data has token {data} "
      f"({have!r}): the answer re-tokenises to other ids"
  )


def to_record(
    entries: Sequence[dict],
    *,
    example_id: str,
    index: int,
    ids: np.ndarray,
    mask: np.ndarray,
    max_length: int,
    top_k: int,
    token_map: api_teacher.TokenMap,
    logprob_dtype: np.dtype,
    where: str,
) -> tuple[teacher_store.StoreRecord, api_teacher.Counts]:
  """One (partial) store record of a prepared example from its curated chat entries."""
  name = f"example {example_id!r} (record {index})"
  start = content_span(ids, mask, f"{where}: {name}")
  bad = first_mismatch(entries, ids, start, token_map)
  if bad is not None:
    raise ChatLogprobError(
        f"{where}: {name}, position {start + bad - 1} (answer token {bad}): "
        + describe(entries, ids, start, bad, token_map)
    )
  # Trained positions t predict token t + 1 = content token t + 1 - start; the one past the
  # entries predicts `<|im_end|>`, which no chat API scores.
  positions = teacher_store.target_positions(mask, max_length)
  positions = positions[positions + 1 - start < len(entries)]
  m = len(positions)
  out_ids = np.zeros((m, top_k), np.int32)
  out_lp = np.full((m, top_k), -np.inf, np.float64)
  tail = np.zeros(m, np.float64)
  counts = api_teacher.Counts(positions=m)
  for row, t in enumerate(positions.tolist()):
    i = t + 1 - start
    here = f"{where}: {name}, position {t} (answer token {i})"
    kept: dict[int, float] = {}
    for alt in entries[i]["top_logprobs"]:
      # An id (ours) names the token exactly; a string may be ambiguous.
      s = f"{api_teacher.TOKEN_ID_PREFIX}{alt['id']}" if "id" in alt else alt["token"]
      j = api_teacher.alternative_id(token_map, s, alt["logprob"], here)
      if j == api_teacher.AMBIGUOUS:
        counts.alternatives_ambiguous += 1
      else:
        kept[j] = max(float(alt["logprob"]), kept.get(j, -math.inf))
    out_ids[row], out_lp[row], tail[row] = api_teacher.top_k_row(
        kept, top_k, token_map.vocab_size, counts
    )
  rec = teacher_store.StoreRecord(
      example_id=example_id,
      index=index,
      sha256=teacher_store.token_hash(ids),
      num_tokens=len(ids),
      positions=positions.astype(np.int32),
      topk_ids=out_ids,
      topk_logprobs=out_lp.astype(logprob_dtype),
      tail=tail.astype(np.float32),
  )
  return rec, counts
