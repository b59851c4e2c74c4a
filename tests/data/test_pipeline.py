"""The grain pipeline: DEVELOPERS.md batches, deterministic order, exact resume, process split."""

import collections
import itertools
import json

import numpy as np
import pytest

from distil_jax.data import shards
from distil_jax.data.pipeline import BATCH_KEYS, make_dataset, make_iterator

SEQ_LEN, BATCH = 256, 4


def _documents(corpus_dir, seq_len=SEQ_LEN):
  """Every stored example as (ids, mask), truncated to `seq_len` as the pipeline does."""
  manifest = shards.read_manifest(corpus_dir)
  out = []
  for s in manifest["shards"]:
    for record in shards.read_records(corpus_dir / s["path"]):
      _, ids, mask = shards.decode_record(record)
      out.append((ids[:seq_len], mask[:seq_len]))
  return out


def _unpack(batch):
  """Each packed document of a batch as (input_ids, target_ids, loss_mask, positions) tuples."""
  docs = []
  for row in range(batch["input_ids"].shape[0]):
    seg = batch["segment_ids"][row]
    for s in np.unique(seg[seg > 0]):
      where = np.flatnonzero(seg == s)
      assert np.all(np.diff(where) == 1), "a document must be contiguous"
      docs.append(
          tuple(batch[k][row, where] for k in ("input_ids", "target_ids", "loss_mask", "positions"))
      )
  return docs


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_batches_follow_the_developers_contract(corpus_dir):
  batches = _take(make_iterator(corpus_dir, seq_len=SEQ_LEN, batch_size=BATCH, seed=0), 6)
  stored = {ids.tobytes(): mask for ids, mask in _documents(corpus_dir)}
  packed_rows = 0
  for batch in batches:
    assert set(batch) == set(BATCH_KEYS)
    for k in BATCH_KEYS:
      assert batch[k].shape == (BATCH, SEQ_LEN)
      assert batch[k].dtype == (np.float32 if k == "loss_mask" else np.int32)
    padding = batch["segment_ids"] == 0
    assert not batch["loss_mask"][padding].any() and not batch["input_ids"][padding].any()
    packed_rows += int((batch["segment_ids"].max(axis=1) > 1).sum())
    for inputs, targets, loss_mask, positions in _unpack(batch):
      np.testing.assert_array_equal(positions, np.arange(len(inputs)))  # restart per document
      np.testing.assert_array_equal(targets[:-1], inputs[1:])  # the next token, same document
      assert loss_mask[-1] == 0  # its next token would belong to another document
      mask = stored[inputs.tobytes()]  # every packed document is a stored one
      np.testing.assert_array_equal(loss_mask[:-1], mask[1:])  # trained iff target is assistant
  assert packed_rows > 0, "expected some rows to hold more than one document"


def test_same_seed_same_batches_other_seed_other_order(corpus_dir):
  def first(seed):
    return _take(make_iterator(corpus_dir, seq_len=SEQ_LEN, batch_size=BATCH, seed=seed), 3)

  _assert_same_batches(first(0), first(0))
  assert not np.array_equal(first(0)[0]["input_ids"], first(1)[0]["input_ids"])


def test_restoring_a_saved_state_continues_bit_identically(corpus_dir):
  # 6 packing bins for batches of 4 rows: the state is taken in the middle of a packed group
  kwargs = dict(seq_len=SEQ_LEN, batch_size=BATCH, num_packing_bins=6, seed=3)
  uninterrupted = make_iterator(corpus_dir, **kwargs)
  before = _take(uninterrupted, 7)
  state = uninterrupted.get_state()
  assert state["next_row"] != 0
  state = json.loads(json.dumps(state))  # as a checkpoint would store it
  expected = _take(uninterrupted, 70)
  documents_seen = sum(len(_unpack(b)) for b in before + expected)
  assert documents_seen > len(_documents(corpus_dir)), "should run on into the second epoch"

  resumed = make_iterator(corpus_dir, **kwargs)
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 70), expected)


def test_processes_get_disjoint_slices_that_cover_every_epoch(corpus_dir):
  documents = _documents(corpus_dir)
  counts = collections.Counter()
  seen_by = []
  for index in range(2):
    ds = make_dataset(
        corpus_dir,
        seq_len=SEQ_LEN,
        batch_size=1,
        num_packing_bins=4,
        seed=5,
        shard_index=index,
        shard_count=2,
        num_epochs=1,
    )
    mine = collections.Counter(d[0].tobytes() for batch in ds for d in _unpack(batch))
    seen_by.append(mine)
    counts.update(mine)
  assert counts == collections.Counter(ids.tobytes() for ids, _ in documents)
  assert not set(seen_by[0]) & set(seen_by[1])
  assert abs(sum(seen_by[0].values()) - sum(seen_by[1].values())) <= 1


def test_worker_prefetch_gives_the_same_batches_as_no_workers(corpus_dir):
  kwargs = dict(seq_len=SEQ_LEN, batch_size=BATCH, seed=7)
  expected = _take(make_iterator(corpus_dir, **kwargs), 12)
  with_workers = make_iterator(corpus_dir, worker_count=2, worker_buffer_size=2, **kwargs)
  try:
    _assert_same_batches(_take(with_workers, 12), expected)
  finally:
    with_workers.close()


def test_bad_arguments_are_clear_errors(corpus_dir, tmp_path):
  with pytest.raises(ValueError, match="shard_index 2 outside"):
    make_dataset(corpus_dir, seq_len=SEQ_LEN, batch_size=1, shard_index=2, shard_count=2)
  with pytest.raises(FileNotFoundError, match="no manifest"):
    make_dataset(tmp_path, seq_len=SEQ_LEN, batch_size=1)


def test_documents_longer_than_seq_len_are_truncated(corpus_dir):
  short = 32
  batch = next(make_iterator(corpus_dir, seq_len=short, batch_size=BATCH, seed=0))
  lengths = [len(d[0]) for d in _unpack(batch)]
  assert max(lengths) == short and len(lengths) == BATCH  # chats are longer than 32 tokens
  assert all(itertools.chain.from_iterable(d[3] == np.arange(short) for d in _unpack(batch)))


def test_max_documents_per_row_caps_the_packing(corpus_dir):
  """cuDNN's ragged attention has a fixed number of document slots per row."""

  def most_documents(**kw):
    batches = _take(
        make_iterator(corpus_dir, seq_len=4 * SEQ_LEN, batch_size=BATCH, seed=0, **kw), 4
    )
    return max(int(b["segment_ids"].max()) for b in batches)

  assert most_documents() > 3  # rows of 1,024 tokens uncapped hold more than three chats
  assert most_documents(max_documents_per_row=3) == 3
