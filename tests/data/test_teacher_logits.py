"""`distil-jax teacher-logits` and the join: the store holds the teacher's own top-k at exactly
the trained positions, survives a kill, and joins back after shuffling and packing, by example,
refusing any store that does not match the data."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distil_jax
from distil_jax.cli import main as cli
from distil_jax.data import shards, teacher_store
from distil_jax.data.pipeline import make_iterator
from distil_jax.data.prepare import prepare_dataset
from distil_jax.testing.hf_models import make_hf_checkpoint

ROOT = Path(__file__).resolve().parents[2]
K, MAX_LENGTH, REAL_VOCAB = 5, 96, 151_665
N_CHATS, UNIT = 12, 4


def _prepare(root: Path, chats, tok, write_jsonl, name: str) -> Path:
  write_jsonl(root / f"{name}.jsonl", chats)
  prepare_dataset(
      [root / f"{name}.jsonl"], root / name, tokenizer=tok, max_length=MAX_LENGTH, shard_size=5
  )
  return root / name


def _short_chats(make_chats, n):
  """One exchange of at most 24 words a turn: most fit MAX_LENGTH, a few are cut."""
  chats = []
  for chat in make_chats(n, seed=11):
    turns = [m for m in chat["messages"] if m["role"] != "system"][:2]
    chats.append(
        {**chat, "messages": [{**m, "content": " ".join(m["content"].split()[:24])} for m in turns]}
    )
  return chats


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tok, make_chats, jsonl_writer):
  """Prepared chats (three shards), a teacher with Qwen2.5's padded vocabulary (151,936 rows,
  151,665 real tokens) and wide weights, so its top-k are well separated, and its store
  (default float16 log-probs; small batches and chunks, so several slot buckets run)."""
  root = tmp_path_factory.mktemp("offline")
  chats = _short_chats(make_chats, N_CHATS)
  data = _prepare(root, chats, tok, jsonl_writer, "data")
  teacher = make_hf_checkpoint(
      str(root / "teacher"),
      vocab_size=151_936,
      hidden_size=32,
      intermediate_size=64,
      num_attention_heads=4,
      num_key_value_heads=2,
      initializer_range=1.0,
  )
  tok.save_pretrained(teacher)
  store = root / "store"
  assert _teacher_logits(teacher, data, store) == 0
  return {
      "root": root,
      "data": data,
      "teacher": teacher,
      "store": store,
      "tok": tok,
      "chats": chats,
      "write_jsonl": jsonl_writer,
  }


def _teacher_logits(teacher, data, output, *extra) -> int:
  return cli(
      [
          "teacher-logits",
          "--teacher",
          str(teacher),
          "--data",
          str(data),
          "--output",
          str(output),
          "--top_k",
          str(K),
          *ARGS,
          *extra,
      ]
  )


ARGS = ("--batch_size", "2", "--unit_size", str(UNIT), "--chunk", "16", "--dtype", "float32")


def _records(data: Path):
  out = []
  for s in shards.read_manifest(data)["shards"]:
    out += [shards.decode_record(r) for r in shards.read_records(data / s["path"])]
  return out


@pytest.fixture(scope="module")
def reference(setup):
  """Per record index: at each trained position t, float64 log-softmax over the real
  vocabulary of the teacher's full logits, `model(ids)` on the document alone -> (top-k ids by
  descending log-prob, their log-probs, log of the summed probability of all other tokens)."""
  model = distil_jax.from_pretrained(setup["teacher"], dtype=jnp.float32)
  logits_fn = jax.jit(lambda ids: model(ids))
  out = {}
  for index, (_, ids, mask) in enumerate(_records(setup["data"])):
    padded = np.zeros((1, MAX_LENGTH), np.int32)
    padded[0, : len(ids)] = ids  # right padding: causal, so earlier positions are unchanged
    trained = np.flatnonzero(mask[1:])
    z = np.asarray(logits_fn(padded)[0, trained, :REAL_VOCAB], np.float64)
    m = z.max(-1, keepdims=True)
    lp = z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))
    top = np.argpartition(-lp, K, axis=-1)[:, :K]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(lp, top, -1), -1), -1)
    rest = lp.copy()
    np.put_along_axis(rest, top, -np.inf, axis=-1)
    tail = np.log(np.exp(rest).sum(-1))
    out[index] = tuple(
        _scatter(a, trained, len(ids)) for a in (top, np.take_along_axis(lp, top, -1), tail)
    )
  return out


def _scatter(values, trained, n):
  """Values at trained positions -> an array over all n positions (NaN elsewhere)."""
  out = np.full((n, *values.shape[1:]), np.nan if values.dtype.kind == "f" else -1, values.dtype)
  out[trained] = values
  return out


def _assert_matches_reference(ids, logprobs, tail, ref):
  """Float16 log-probs: within half a float16 ulp (2**-11 relative) of the float64 value."""
  ref_ids, ref_lp, ref_tail = ref
  np.testing.assert_array_equal(ids, ref_ids)
  np.testing.assert_allclose(logprobs, ref_lp, rtol=2.0**-11, atol=1e-5)
  np.testing.assert_allclose(tail, ref_tail, rtol=0, atol=1e-4)


def test_store_holds_the_teachers_float64_top_k_at_exactly_the_trained_positions(setup, reference):
  directory = setup["store"]
  manifest = teacher_store.read_manifest(directory)
  assert manifest["vocab_columns"] == REAL_VOCAB and manifest["top_k"] == K
  assert (
      manifest["tokenizer"]["fingerprint"]
      == shards.read_manifest(setup["data"])["tokenizer"]["fingerprint"]
  )
  records = _records(setup["data"])
  store = teacher_store.TeacherStore(directory)
  assert len(store) == len(records) >= N_CHATS - 1
  assert sum(r[1].shape[0] == MAX_LENGTH for r in records) >= 1, "want a document cut short"
  for index, (example_id, ids, mask) in enumerate(records):
    rec = store[index]
    assert (rec.example_id, rec.index, rec.num_tokens) == (example_id, index, len(ids))
    assert rec.sha256 == teacher_store.token_hash(ids)
    np.testing.assert_array_equal(rec.positions, np.flatnonzero(mask[1:]))  # trained targets
    ref_ids, ref_lp, ref_tail = reference[index]
    p = rec.positions
    assert rec.topk_logprobs.dtype == np.float16
    _assert_matches_reference(
        rec.topk_ids,
        rec.topk_logprobs.astype(np.float64),
        rec.tail,
        (ref_ids[p], ref_lp[p], ref_tail[p]),
    )


def test_a_killed_run_resumes_to_identical_files(setup, tmp_path):
  output = tmp_path / "store"
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  killed = subprocess.run(
      [
          sys.executable,
          "-m",
          "distil_jax.cli",
          "teacher-logits",
          "--teacher",
          str(setup["teacher"]),
          "--data",
          str(setup["data"]),
          "--output",
          str(output),
          "--top_k",
          str(K),
          *ARGS,
          "--kill_after_units",
          "1",
      ],
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert killed.returncode == -9, killed.stderr
  names = {p.name for p in output.iterdir()}
  assert "unit-00000.json" in names and "unit-00001.json" not in names
  assert any(n.startswith(".unit-00001.array_record.tmp-") for n in names)  # half a unit
  assert "manifest.json" not in names

  assert _teacher_logits(setup["teacher"], setup["data"], output) == 0
  fresh = setup["store"]
  assert sorted(p.name for p in output.iterdir()) == sorted(p.name for p in fresh.iterdir())
  for p in fresh.iterdir():
    assert (output / p.name).read_bytes() == p.read_bytes(), p.name


@pytest.mark.slow
def test_two_processes_write_their_own_units_and_the_same_store(setup, tmp_path):
  """Process i of 2 takes units i, i + 2, ...; the global step spans both (gloo on CPU)."""
  import portpicker

  output, port = tmp_path / "store", portpicker.pick_unused_port()
  env = {
      **os.environ,
      "PYTHONPATH": str(ROOT),
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
  }
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              "-m",
              "distil_jax.cli",
              "teacher-logits",
              "--teacher",
              str(setup["teacher"]),
              "--data",
              str(setup["data"]),
              "--output",
              str(output),
              "--top_k",
              str(K),
              *ARGS,
              "--mesh",
              "data=-1",
              "--coordinator",
              f"localhost:{port}",
              "--num_processes",
              "2",
              "--process_id",
              str(i),
          ],
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  try:
    results = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, results):
    assert p.returncode == 0, err[-3000:]
  assert '"units_computed_per_process": [2, 1]' in results[0][0]  # units 0, 2 and 1
  # Rows sharded over 4 devices round differently from 1 device: equal up to float rounding.
  ours, one = teacher_store.TeacherStore(output), teacher_store.TeacherStore(setup["store"])
  assert len(ours) == len(one)
  for i in range(len(one)):
    a, b = ours[i], one[i]
    assert (a.example_id, a.sha256) == (b.example_id, b.sha256)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
    np.testing.assert_allclose(
        a.topk_logprobs.astype(np.float64), b.topk_logprobs.astype(np.float64), rtol=2.0**-10
    )
    np.testing.assert_allclose(a.tail, b.tail, atol=1e-4)


def test_a_teacher_with_another_tokenizer_is_refused_naming_both(setup, tmp_path, capsys):
  other = tmp_path / "teacher"
  other.mkdir()
  for p in Path(setup["teacher"]).iterdir():
    (other / p.name).write_bytes(p.read_bytes())
  tok = setup["tok"]
  saved = tok.chat_template
  try:
    tok.chat_template = saved.replace("You are Qwen", "You are Other")
    tok.save_pretrained(str(other))
  finally:
    tok.chat_template = saved
  assert _teacher_logits(other, setup["data"], tmp_path / "store") == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  assert str(other / "tokenizer.json") in err and str(setup["data"]) in err
  assert not (tmp_path / "store").exists()


def test_bad_input_is_one_clear_line(setup, tmp_path, capsys):
  assert _teacher_logits(setup["teacher"], tmp_path / "nothing", tmp_path / "s") == 2
  assert "no manifest" in capsys.readouterr().err
  assert (
      _teacher_logits(setup["teacher"], setup["data"], setup["store"], "--logprob_dtype", "float32")
      == 2
  )  # a store begun otherwise
  err = capsys.readouterr().err
  assert "logprob_dtype: 'float16' there, 'float32' now" in err and len(err.splitlines()) == 1


# --- the join -----------------------------------------------------------------------------
SEQ_LEN = 2 * MAX_LENGTH  # rows of two or more documents


def test_joined_batches_hold_each_documents_teacher_top_k_after_shuffling_and_packing(
    setup, reference
):
  it = make_iterator(
      setup["data"],
      seq_len=SEQ_LEN,
      batch_size=2,
      seed=4,
      num_epochs=1,
      teacher_store=setup["store"],
      prefetch_batches=0,
  )
  seen, rows_with_several = set(), 0
  for batch in it:
    assert batch["topk_ids"].shape == (2, SEQ_LEN, K) and batch["topk_ids"].dtype == np.int32
    assert batch["topk_logprobs"].dtype == np.float32
    assert batch["topk_tail"].shape == (2, SEQ_LEN)
    untrained = batch["loss_mask"] == 0
    assert not batch["topk_ids"][untrained].any() and not batch["topk_tail"][untrained].any()
    assert batch["kd_mask"].dtype == np.float32
    np.testing.assert_array_equal(batch["kd_mask"], batch["loss_mask"] > 0)  # a complete store
    assert np.all(batch["example_index"][batch["segment_ids"] == 0] == -1)
    for row in range(2):
      seg = batch["segment_ids"][row]
      rows_with_several += int(seg.max() > 1)
      for s in np.unique(seg[seg > 0]):
        where = np.flatnonzero(seg == s)
        index = int(batch["example_index"][row, where[0]])
        seen.add(index)
        trained = where[batch["loss_mask"][row, where] > 0]
        t = batch["positions"][row, trained]  # the document's own positions
        ref_ids, ref_lp, ref_tail = reference[index]
        _assert_matches_reference(
            batch["topk_ids"][row, trained],
            batch["topk_logprobs"][row, trained],
            batch["topk_tail"][row, trained],
            (ref_ids[t], ref_lp[t], ref_tail[t]),
        )
        # the top-k is over the very token the row trains on next
        np.testing.assert_array_equal(
            batch["target_ids"][row, trained], _records(setup["data"])[index][1][t + 1]
        )
  assert seen == set(range(len(reference))) and rows_with_several > 0


def _edited(setup, name, edit):
  chats = [dict(c) for c in setup["chats"]]
  edit(chats[5])
  return _prepare(setup["root"], chats, setup["tok"], setup["write_jsonl"], name)


def _drain(data, store):
  for _ in make_iterator(
      data,
      seq_len=SEQ_LEN,
      batch_size=2,
      seed=0,
      num_epochs=1,
      teacher_store=store,
      prefetch_batches=0,
  ):
    pass


def test_a_store_of_other_tokens_fails_the_join_naming_the_example(setup):
  def change_answer(chat):
    chat["messages"] = [*chat["messages"][:-1], {"role": "assistant", "content": "changed"}]

  data = _edited(setup, "changed-tokens", change_answer)
  with pytest.raises(
      ValueError,
      match=r"example 'ex-0005' \(record 5\): teacher store .*"
      r"unit-00001.array_record was computed on other tokens",
  ):
    _drain(data, setup["store"])


def test_a_store_with_another_id_fails_the_join_naming_the_example(setup):
  data = _edited(setup, "renamed", lambda chat: chat.update(id="renamed-5"))
  with pytest.raises(
      ValueError,
      match=r"example 'renamed-5' \(record 5\): teacher store .*" r"holds example 'ex-0005'",
  ):
    _drain(data, setup["store"])


def test_the_join_resumes_bit_identically(setup):
  kwargs = dict(
      seq_len=SEQ_LEN, batch_size=2, seed=1, num_packing_bins=3, teacher_store=setup["store"]
  )
  first = make_iterator(setup["data"], **kwargs)
  for _ in range(3):
    next(first)
  state = first.get_state()
  expected = [next(first) for _ in range(6)]
  resumed = make_iterator(setup["data"], **kwargs)
  resumed.set_state(state)
  for a, b in zip(expected, [next(resumed) for _ in range(6)]):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_a_store_lacking_a_trained_position_fails_the_join(setup, tmp_path):
  """E.g. a store computed with a shorter --max_length than the training rows use."""
  source = teacher_store.TeacherStore(setup["store"])
  settings = {
      k: v
      for k, v in source.manifest.items()
      if k not in ("format", "record_format", "counts", "units")
      and not k.endswith("per_stored_token")
  }
  teacher_store.begin_store(tmp_path, settings)
  units = teacher_store.unit_ranges(len(source), UNIT)
  for u, (start, end) in enumerate(units):
    writer = teacher_store.UnitWriter(tmp_path, u, start, end)
    for i in range(start, end):
      r = source[i]
      keep = slice(0, max(len(r.positions) - 1, 0))  # drop each last trained position
      writer.write(
          teacher_store.StoreRecord(
              r.example_id,
              r.index,
              r.sha256,
              r.num_tokens,
              r.positions[keep],
              r.topk_ids[keep],
              r.topk_logprobs[keep],
              r.tail[keep],
          )
      )
    writer.finish()
  teacher_store.finish_store(tmp_path, len(units))
  with pytest.raises(
      ValueError,
      match=r"example 'ex-\d+' \(record \d+\): teacher store .* has "
      r"no distribution at position \d+",
  ):
    _drain(setup["data"], tmp_path)


def test_rerunning_a_finished_store_recomputes_nothing(setup, capsys):
  before = {p.name: p.read_bytes() for p in setup["store"].iterdir()}
  assert _teacher_logits(setup["teacher"], setup["data"], setup["store"]) == 0
  assert '"units_computed_per_process": [0]' in capsys.readouterr().out
  assert {p.name: p.read_bytes() for p in setup["store"].iterdir()} == before


@pytest.mark.slow
def test_offline_kd_trains_from_the_store(setup, tmp_path):
  """configs/kd/tiny_offline.py reads the joined fields: the KD term is reported and falls."""
  import json

  env = {
      **os.environ,
      "PYTHONPATH": str(ROOT),
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
  }
  run = subprocess.run(
      [
          sys.executable,
          "-m",
          "distil_jax.cli",
          "train",
          "--config",
          str(ROOT / "configs/kd/tiny_offline.py"),
          "--workdir",
          str(tmp_path),
          f"--config.data.path={setup['data']}",
          f"--config.data.teacher_store={setup['store']}",
          "--config.steps=6",
          "--config.log_every=1",
          "--config.data.seq_len=192",
          "--config.data.batch_size=2",
          "--config.optim.warmup_steps=1",
          "--no_progress",
      ],
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  kd = [json.loads(line)["kd"] for line in open(tmp_path / "metrics.jsonl")]
  assert len(kd) == 6 and all(np.isfinite(kd)) and np.mean(kd[-2:]) < np.mean(kd[:2])
