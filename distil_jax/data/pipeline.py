"""Tokenized shards -> packed training batches, with a checkpointable grain iterator.

Order of operations (each step deterministic given `seed`):
  ArrayRecord source -> global shuffle -> this process's slice `[shard_index::shard_count]`
  -> repeat (reshuffled each epoch) -> decode a record into per-document
  `input_ids`/`target_ids`/`loss_mask` -> [worker prefetch] -> first-fit packing into rows of
  `seq_len` -> batch -> the batch dict of DEVELOPERS.md.

Documents are shifted before packing, so `target_ids[t]` is always the next token of the same
document and a document's last token (whose next token would be another document's) has
`loss_mask` 0. A document longer than `seq_len` is truncated to `seq_len` tokens.

Every position carries `example_index`, the global record index of its document (-1 on
padding), through packing. With `teacher_store`, each batch is then joined, by example, with the
offline teacher's top-k (see `teacher_join.py`): after shuffling and packing, never by step.

Packing runs after the worker prefetch, in the consuming process: grain's workers read
interleaved slices of the decoded stream, so the packed batches do not depend on the number of
workers, and the iterator's `get_state()` / `set_state()` resume bit-identically.
"""

from __future__ import annotations

import os
from pathlib import Path

import grain
import numpy as np

from distil_jax.data import shards

FEATURES = ("input_ids", "target_ids", "loss_mask", "example_index")
BATCH_KEYS = ("input_ids", "target_ids", "loss_mask", "segment_ids", "positions", "example_index")
TEACHER_KEYS = ("topk_ids", "topk_logprobs", "topk_tail", "kd_mask")


class _IndexedRecords:
  """The data's ArrayRecord files as one source of `(global record index, record bytes)`."""

  def __init__(self, paths: list[str]):
    self._source = shards.ShardSource(paths)  # read errors name the shard

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index) -> tuple[int, bytes]:
    return int(index), self._source[index]


class _DecodeDocument(grain.transforms.Map):
  """One record -> next-token-shifted features of one document (picklable for workers)."""

  def __init__(self, seq_len: int):
    self._seq_len = seq_len

  def map(self, indexed: tuple[int, bytes]) -> dict[str, np.ndarray]:
    index, record = indexed
    _, ids, mask = shards.decode_record(record)
    ids, mask = ids[: self._seq_len], mask[: self._seq_len]
    target_ids = np.zeros_like(ids)
    target_ids[:-1] = ids[1:]
    loss_mask = np.zeros(ids.shape, np.float32)
    loss_mask[:-1] = mask[1:]
    return {
        "input_ids": ids,
        "target_ids": target_ids,
        "loss_mask": loss_mask,
        "example_index": np.full(ids.shape, index, np.int32),
    }


def _to_training_batch(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  segment_ids = packed["input_ids_segment_ids"].astype(np.int32)  # 0 = padding
  return {
      "input_ids": packed["input_ids"].astype(np.int32),
      "target_ids": packed["target_ids"].astype(np.int32),
      "loss_mask": packed["loss_mask"].astype(np.float32),
      "segment_ids": segment_ids,
      "positions": packed["input_ids_positions"].astype(np.int32),
      "example_index": np.where(segment_ids > 0, packed["example_index"], -1).astype(np.int32),
  }


def make_dataset(
    data_dir: str | os.PathLike,
    *,
    seq_len: int,
    batch_size: int,
    seed: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
    num_epochs: int | None = None,
    shuffle: bool = True,
    num_packing_bins: int | None = None,
    max_documents_per_row: int | None = None,
    worker_count: int = 0,
    worker_buffer_size: int = 4,
    read_threads: int = 2,
    prefetch_batches: int = 2,
    teacher_store: str | os.PathLike | None = None,
) -> grain.IterDataset:
  """The batch stream of one process, as a grain `IterDataset` (iterate it, or `iter()` it).

  `shard_index`/`shard_count`: this process's slice of every epoch (pass
  `jax.process_index()`, `jax.process_count()`); slices are disjoint and cover the data.
  `num_epochs=None` repeats forever. `num_packing_bins` (default `batch_size`) rows are
  packed at once: more bins pack tighter. `max_documents_per_row` caps the documents in one
  row (cuDNN's ragged attention has a fixed number of slots per row: pass
  `ModelConfig.max_segments_per_row`). `worker_count > 0` decodes in that many processes
  (a script using them needs the `if __name__ == "__main__":` guard: workers are spawned).
  `prefetch_batches` batches are packed ahead in a background thread, so packing overlaps
  the train step; the iterator state still points at the last batch handed out.
  `teacher_store`: a directory written by `distil-jax teacher-logits` over this data; every
  batch then also holds `topk_ids` [B, L, K] int32, `topk_logprobs` [B, L, K] float32,
  `topk_tail` [B, L] float32 (zeros where `loss_mask` is 0) and `kd_mask` [B, L] float32 (1 where
  the store has the position), checked example by example.
  """
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} outside [0, {shard_count})")
  manifest = shards.read_manifest(data_dir)
  shards.verify_shards(data_dir, manifest)  # sizes, counts, magic: errors name the shard file
  paths = [str(Path(data_dir) / s["path"]) for s in manifest["shards"] if s["examples"]]
  if not paths:
    raise ValueError(f"{data_dir}: the manifest lists no examples")
  join = None
  if teacher_store is not None:
    from distil_jax.data.teacher_join import JoinTeacher  # noqa: PLC0415

    join = JoinTeacher(teacher_store, data_dir, manifest, paths)
  ds = grain.MapDataset.source(_IndexedRecords(paths))
  if len(ds) < shard_count:
    raise ValueError(f"{data_dir}: {len(ds)} examples cannot be split over {shard_count} processes")
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds[shard_index::shard_count]
  ds = ds.repeat(num_epochs)
  ds = ds.map(_DecodeDocument(seq_len))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=64))
  if worker_count > 0:
    _mark_absl_flags_parsed()
    it = it.mp_prefetch(
        grain.MultiprocessingOptions(
            num_workers=worker_count, per_worker_buffer_size=worker_buffer_size
        )
    )
  it = grain.experimental.FirstFitPackIterDataset(
      it,
      length_struct={k: seq_len for k in FEATURES},
      num_packing_bins=num_packing_bins or batch_size,
      seed=seed,
      shuffle_bins=True,
      max_sequences_per_bin=max_documents_per_row or None,
  )
  it = it.batch(batch_size, drop_remainder=True).map(_to_training_batch)
  if join is not None:
    it = it.map(join)
  if prefetch_batches > 0:
    it = grain.experimental.ThreadPrefetchIterDataset(it, prefetch_buffer_size=prefetch_batches)
  return it


def make_iterator(data_dir: str | os.PathLike, **kwargs) -> grain.DatasetIterator:
  """`iter(make_dataset(...))`: a `DatasetIterator` with `get_state()` / `set_state(state)`."""
  return iter(make_dataset(data_dir, **kwargs))


def _mark_absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside `absl.app.run` nobody parsed them."""
  from absl import flags

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
