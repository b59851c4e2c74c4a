"""Joins packed training batches with the offline teacher store, example by example.

A batch row holds several documents; each carries `example_index`, its global record index,
through shuffling and packing. For every document the join reads the data record and the store
record at that index and checks, before using anything:
  1. the row's tokens are the data record's (so the carried index is right),
  2. the store record's example id, token count and sha256 of the token ids are the data
     record's (so the store was computed on these very tokens),
  3. the store holds a distribution at every position the row trains on; a store whose manifest
     says `partial_positions: true` (`distil-jax chat-logits`: a chat API scores no
     `<|im_end|>`) may lack the example's final trained position and no other.
`kd_mask` is 1 where the store has the position (for a complete store: `loss_mask > 0`), so
the KD loss trains an unscored position on its hard label alone (`distil_jax.train.kd`).
Any failure is a ValueError naming the example id, the record index and the store file: a
store from other data, or a wrong index, can never be joined silently (the reference toolkit
indexed teacher logits by training step; here nothing is looked up by step).
"""

from __future__ import annotations

import os

import grain
import numpy as np

from distil_jax.data import shards
from distil_jax.data.teacher_store import TeacherStore, token_hash


class JoinTeacher(grain.transforms.Map):
  """A batch -> the batch plus `topk_ids`, `topk_logprobs`, `topk_tail`, `kd_mask` aligned with
  `target_ids`: row position p holds the teacher's distribution over `target_ids[p]`."""

  def __init__(
      self,
      store_dir: str | os.PathLike,
      data_dir: str | os.PathLike,
      data_manifest: dict,
      data_paths: list[str],
  ):
    self._store = TeacherStore(store_dir)
    self._data = grain.sources.ArrayRecordDataSource(data_paths)
    manifest = self._store.manifest
    if manifest["tokenizer"]["fingerprint"] != data_manifest["tokenizer"]["fingerprint"]:
      raise ValueError(
          f"teacher store {store_dir} was computed with tokenizer "
          f"{manifest['tokenizer']['fingerprint'][:16]}, the data {data_dir} "
          f"with {data_manifest['tokenizer']['fingerprint'][:16]}"
      )
    if len(self._store) != len(self._data):
      raise ValueError(
          f"teacher store {store_dir} holds {len(self._store)} examples, the "
          f"data {data_dir} {len(self._data)}: it was built from other data"
      )
    self.top_k = self._store.top_k
    self.partial = bool(manifest.get("partial_positions", False))

  def map(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    B, L = batch["input_ids"].shape
    ids_BxLxK = np.zeros((B, L, self.top_k), np.int32)
    logprobs_BxLxK = np.zeros((B, L, self.top_k), np.float32)
    tail_BxL = np.zeros((B, L), np.float32)
    kd_mask_BxL = np.zeros((B, L), np.float32)
    for row in range(B):
      for a, b in _documents(batch["segment_ids"][row]):
        index = int(batch["example_index"][row, a])
        rec, (at, found) = self._checked(batch, row, a, b, index)
        ids_BxLxK[row, a + at] = rec.topk_ids[found]
        logprobs_BxLxK[row, a + at] = rec.topk_logprobs[found]
        tail_BxL[row, a + at] = rec.tail[found]
        kd_mask_BxL[row, a + at] = 1.0
    return {
        **batch,
        "topk_ids": ids_BxLxK,
        "topk_logprobs": logprobs_BxLxK,
        "topk_tail": tail_BxL,
        "kd_mask": kd_mask_BxL,
    }

  def _checked(self, batch, row: int, a: int, b: int, index: int):
    """The store record of the document at `[a, b)` of `row`, and (row offsets, record rows)
    of its trained positions the store has; every check of the module docstring."""
    if not np.all(batch["example_index"][row, a:b] == index):
      raise ValueError(
          f"batch row {row} [{a}, {b}): one document carries several "
          "example indices (a packing bug)"
      )
    example_id, ids, mask = shards.decode_record(self._data[index])
    if not np.array_equal(batch["input_ids"][row, a:b], ids[: b - a]):
      raise ValueError(
          f"example {example_id!r} (record {index}): the packed row's tokens "
          "are not the data record's (a wrong example_index)"
      )
    rec = self._store[index]
    path = self._store.path_of(index)
    digest = token_hash(ids)
    if rec.example_id != example_id:
      raise ValueError(
          f"example {example_id!r} (record {index}): teacher store {path} holds "
          f"example {rec.example_id!r} at this index: it was built from other "
          "data"
      )
    if rec.sha256 != digest or rec.num_tokens != len(ids):
      raise ValueError(
          f"example {example_id!r} (record {index}): teacher store {path} was "
          f"computed on other tokens ({rec.num_tokens} tokens, sha256 "
          f"{rec.sha256[:16]}; the data has {len(ids)}, {digest[:16]})"
      )
    trained = np.flatnonzero(batch["loss_mask"][row, a:b] > 0)
    found = np.searchsorted(rec.positions, trained)
    present = found < len(rec.positions)
    present[present] = rec.positions[found[present]] == trained[present]
    missing = trained[~present]
    if self.partial and len(missing):
      # The one position a chat API cannot score: the example's last target (`<|im_end|>`).
      final = int(np.flatnonzero(mask[1:])[-1])
      missing = missing[missing != final]
    if len(missing):
      missing = int(missing[0])
      raise ValueError(
          f"example {example_id!r} (record {index}): teacher store {path} "
          f"has no distribution at position {missing} (the store's "
          f"max_length is {self._store.manifest['max_length']}"
          + (
              ", and a partial store may lack only the final trained position)"
              if self.partial
              else ")"
          )
      )
    return rec, (trained[present], found[present])


def _documents(segment_ids_L: np.ndarray) -> list[tuple[int, int]]:
  """`[start, end)` of each run of one non-zero segment id in a row."""
  change = np.flatnonzero(np.diff(segment_ids_L) != 0) + 1
  starts = np.concatenate(([0], change))
  ends = np.concatenate((change, [len(segment_ids_L)]))
  return [(int(a), int(b)) for a, b in zip(starts, ends) if segment_ids_L[a] > 0]
