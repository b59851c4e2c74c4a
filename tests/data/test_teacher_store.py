"""The teacher store format: records round-trip, units finish atomically, settings lock a store."""

import json

import numpy as np
import pytest

from distil_jax.data import teacher_store as ts


def _record(index=3, m=5, k=4, dtype=np.float16, seed=0):
  rng = np.random.default_rng(seed)
  return ts.StoreRecord(
      example_id=f"ex-{index}",
      index=index,
      sha256=ts.token_hash(np.arange(9)),
      num_tokens=9,
      positions=np.sort(rng.choice(8, m, replace=False)).astype(np.int32),
      topk_ids=rng.integers(0, 151_665, (m, k)).astype(np.int32),
      topk_logprobs=-np.sort(rng.exponential(3.0, (m, k)), axis=1).astype(dtype),
      tail=np.log(rng.uniform(0.01, 0.5, m)).astype(np.float32),
  )


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_a_record_round_trips_bit_exactly(dtype):
  rec = _record(dtype=dtype)
  back = ts.decode_record(ts.encode_record(rec))
  assert (back.example_id, back.index, back.sha256, back.num_tokens) == (
      rec.example_id,
      rec.index,
      rec.sha256,
      rec.num_tokens,
  )
  for name in ("positions", "topk_ids", "topk_logprobs", "tail"):
    a, b = getattr(rec, name), getattr(back, name)
    assert a.dtype == b.dtype and a.shape == b.shape, name
    np.testing.assert_array_equal(a, b)


def test_an_example_without_trained_positions_is_stored_empty():
  back = ts.decode_record(ts.encode_record(_record(m=0)))
  assert back.topk_ids.shape == (0, 4) and back.tail.shape == (0,)


def test_token_hash_is_sha256_of_int32_little_endian():
  import hashlib

  ids = np.array([1, 151_643, 7], np.int64)
  assert (
      ts.token_hash(ids)
      == hashlib.sha256(
          b"\x01\x00\x00\x00" + (151_643).to_bytes(4, "little") + b"\x07\x00\x00\x00"
      ).hexdigest()
  )


def test_target_positions_are_those_whose_next_token_is_trained():
  mask = np.array([0, 0, 1, 1, 0, 1, 1], np.uint8)
  np.testing.assert_array_equal(ts.target_positions(mask, 100), [1, 2, 4, 5])
  # the teacher saw only the first 5 tokens: it predicts tokens 1..5 from positions 0..4
  np.testing.assert_array_equal(ts.target_positions(mask, 5), [1, 2, 4])


def test_units_cover_the_records_and_a_finished_unit_is_done(tmp_path):
  assert ts.unit_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
  ts.begin_store(tmp_path, {"top_k": 4})
  writer = ts.UnitWriter(tmp_path, 0, 3, 5)
  writer.write(_record(index=3))
  assert not ts.unit_done(tmp_path, 0)
  with pytest.raises(ValueError, match="record index 3, expected 4"):
    writer.write(_record(index=3))
  writer.write(_record(index=4))
  info = writer.finish()
  assert ts.unit_done(tmp_path, 0) and info["positions"] == 10
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "settings.json",
      "unit-00000.array_record",
      "unit-00000.json",
  ]  # no temporary left


def test_the_manifest_is_written_only_when_every_unit_is_done(tmp_path):
  ts.begin_store(tmp_path, {"top_k": 4, "max_length": 16})
  for unit, (start, end) in enumerate(ts.unit_ranges(4, 2)):
    if unit == 1:
      with pytest.raises(ts.StoreError, match="unit 1 is not finished"):
        ts.finish_store(tmp_path, 2)
    writer = ts.UnitWriter(tmp_path, unit, start, end)
    for i in range(start, end):
      writer.write(_record(index=i, seed=i))
    writer.finish()
  manifest = ts.finish_store(tmp_path, 2)
  assert manifest["counts"]["stored_positions"] == 20 and manifest["counts"]["examples"] == 4
  assert manifest["payload_bytes_per_stored_token"] == pytest.approx(
      manifest["counts"]["payload_bytes"] / 20, abs=0.01
  )
  store = ts.TeacherStore(tmp_path)
  for i in range(4):
    expected = _record(index=i, seed=i)
    got = store[i]
    assert got.example_id == f"ex-{i}"
    np.testing.assert_array_equal(got.topk_ids, expected.topk_ids)
  assert store.path_of(3).name == "unit-00001.array_record"
  with pytest.raises(IndexError, match="record index 4 outside"):
    store[4]


def test_a_store_begun_with_other_settings_is_refused(tmp_path):
  ts.begin_store(tmp_path, {"top_k": 10, "logprob_dtype": "float16"})
  ts.begin_store(tmp_path, {"top_k": 10, "logprob_dtype": "float16"})  # a resume
  with pytest.raises(ts.StoreError, match="top_k: 10 there, 5 now"):
    ts.begin_store(tmp_path, {"top_k": 5, "logprob_dtype": "float16"})
  assert json.loads((tmp_path / "settings.json").read_text())["top_k"] == 10


def test_an_unfinished_store_cannot_be_read(tmp_path):
  ts.begin_store(tmp_path, {"top_k": 10})
  with pytest.raises(ts.StoreError, match="unfinished: rerun"):
    ts.TeacherStore(tmp_path)
