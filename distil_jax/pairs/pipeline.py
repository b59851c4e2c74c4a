"""Tokenized pairs (+ reference log-probs) -> pair batches, through a checkpointable grain iterator.

Order (deterministic given `seed`): pair shards -> global shuffle -> this process's slice
`[shard_index::shard_count]` -> repeat -> decode and join -> batch. One pair is one row per side
(no packing: DPO compares whole sequences). A batch holds, `[B, seq_len]`,
`{side}_input_ids, {side}_target_ids, {side}_loss_mask, {side}_positions, {side}_segment_ids` for
side in (chosen, rejected) (see `tokenize.side_features`), and, when a reference directory is
given, `ref_chosen_logp, ref_rejected_logp` `[B]` float32, joined by pair id and checked against
the token hash: a pair whose tokens differ from those the reference saw stops the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import grain
import numpy as np

from distil_jax.pairs import tokenize


class PairJoinError(ValueError):
  """Reference log-probs that do not belong to the tokenized pairs."""


class _DecodeAndJoin(grain.transforms.Map):

  def __init__(self, seq_len: int, reference: dict | None, reference_dir: str):
    self._seq_len, self._reference, self._reference_dir = seq_len, reference, reference_dir

  def map(self, record: bytes) -> dict[str, np.ndarray]:
    pair = tokenize.decode_pair_record(record)
    out = {}
    for side in tokenize.SIDES:
      features = tokenize.side_features(pair[f"{side}_ids"], pair[f"{side}_mask"], self._seq_len)
      out.update({f"{side}_{k}": v for k, v in features.items()})
    if self._reference is not None:
      entry = self._reference.get(pair["id"])
      if entry is None:
        raise PairJoinError(f"pair {pair['id']!r}: no reference log-probs in {self._reference_dir}")
      if entry[0] != pair["hash"]:
        raise PairJoinError(
            f"pair {pair['id']!r}: its tokens hash to {pair['hash']} but the "
            f"reference log-probs in {self._reference_dir} were computed for "
            f"{entry[0]}; rerun ref-logprobs on these pairs"
        )
      out["ref_chosen_logp"] = np.float32(entry[1])
      out["ref_rejected_logp"] = np.float32(entry[2])
    return out


def make_pair_dataset(
    pairs_dir: str | os.PathLike,
    reference_dir: str | os.PathLike | None,
    *,
    seq_len: int,
    batch_size: int,
    seed: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
    num_epochs: int | None = None,
    shuffle: bool = True,
) -> grain.MapDataset:
  """The pair-batch stream of one process (`num_epochs=None` repeats forever)."""
  from distil_jax.pairs.reference import load_reference_logprobs

  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} outside [0, {shard_count})")
  manifest = tokenize.read_manifest(pairs_dir)
  if manifest["longest"] > seq_len:
    raise ValueError(
        f"{pairs_dir}: sequences of up to {manifest['longest']} tokens do not fit "
        f"seq_len={seq_len}"
    )
  paths = [str(Path(pairs_dir) / s["path"]) for s in manifest["shards"] if s["pairs"]]
  if not paths:
    raise ValueError(f"{pairs_dir}: the manifest lists no pairs")
  reference = None
  if reference_dir is not None:
    reference = load_reference_logprobs(reference_dir, pairs_dir)
  ds = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(paths))
  if len(ds) < shard_count * batch_size:
    raise ValueError(
        f"{pairs_dir}: {len(ds)} pairs cannot fill a batch of {batch_size} on each "
        f"of {shard_count} processes"
    )
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds[shard_index::shard_count].repeat(num_epochs)
  ds = ds.map(_DecodeAndJoin(seq_len, reference, str(reference_dir)))
  return ds.batch(batch_size, drop_remainder=True)


def make_pair_iterator(pairs_dir, reference_dir=None, **kwargs) -> grain.DatasetIterator:
  """`iter(make_pair_dataset(...).to_iter_dataset())`: has `get_state()` / `set_state(state)`."""
  return iter(make_pair_dataset(pairs_dir, reference_dir, **kwargs).to_iter_dataset())
