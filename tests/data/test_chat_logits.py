"""Chat-time teacher log-probs, end to end over real loopback sockets: `distil-jax curate` (refine
only, `top_logprobs = 5`) against `distil-jax serve` over a tiny float32 teacher, `prepare
--require_teacher_logprobs`, `distil-jax chat-logits`. The chat store equals the white-box
`teacher-logits` store at every answer position, lacks only the `<|im_end|>` one (kd_mask 0 in
the joined batches), refuses an edited entry naming id and position, and trains offline KD whose
first loss equals the float64 formula."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import distil_jax
from distil_jax.cli import main as cli
from distil_jax.curate.shards import read_shard, write_shards
from distil_jax.data import make_iterator, shards, teacher_store
from distil_jax.serve import ServeConfig, start_server
from distil_jax.testing.hf_models import make_stopping_teacher

ROOT = Path(__file__).resolve().parents[2]
K, VOCAB = 5, 151_665  # no padding rows: the server's softmax runs over all the teacher's rows
LOGPROB_ATOL = 2e-4  # the api-logits tolerance: float32 server forward vs white-box packed one
INSTRUCTIONS = [
    "Name a colour.",
    "Say hello.",
    "What is 2 + 2?",
    "Give one word.",
    "Count to three.",
    "Pick a fruit.",
    "Name a city.",
    "Say yes or no.",
]


def _curate(url: str, seeds: Path, workdir: Path) -> int:
  overrides = {
      "stages": "refine",
      "num_output_shards": 1,
      "refine.agent.top_logprobs": K,
      "refine.agent.max_tokens": 8,
      "refine.agent.temperature": 0.0,
      "progress_interval_s": 0.5,
  }
  for name in ("teacher", "student"):
    overrides.update(
        {
            f"endpoints.{name}.base_url": url,
            f"endpoints.{name}.timeout_s": 300.0,
            f"endpoints.{name}.max_attempts": 2,
        }
    )
  return cli(
      [
          "curate",
          "--config",
          str(ROOT / "configs/curate/demo.py"),
          "--workdir",
          str(workdir),
          "--input",
          str(seeds),
          *[f"--config.{k}={v}" for k, v in overrides.items()],
      ]
  )


def _chat_logits(curated, data, output, *extra) -> int:
  return cli(
      [
          "chat-logits",
          "--curated",
          str(curated),
          "--data",
          str(data),
          "--output",
          str(output),
          "--logprob_dtype",
          "float32",
          "--unit_size",
          "3",
          *extra,
      ]
  )


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tok):
  root = tmp_path_factory.mktemp("chatlp")
  teacher = make_stopping_teacher(str(root / "teacher"), tok, INSTRUCTIONS, vocab_size=VOCAB)
  seeds = root / "seeds.jsonl"
  seeds.write_text("".join(json.dumps({"instruction": i}) + "\n" for i in INSTRUCTIONS))
  server = start_server(
      distil_jax.from_pretrained(teacher, dtype=jnp.float32),
      tok,
      port=0,
      config=ServeConfig(served_model_names=("teacher",), strict_model_name=True, max_batch=8),
  )
  try:
    assert _curate(server.url, seeds, root / "curated") == 0
  finally:
    server.stop()
  shard = next((root / "curated").glob("curated-*.array_record"))
  first = shard.read_bytes()
  # A rerun with the server gone answers every request, log-probs included, from the journal.
  assert _curate(server.url, seeds, root / "curated") == 0
  assert shard.read_bytes() == first
  data = root / "data"
  assert (
      cli(
          [
              "prepare",
              "--input",
              *map(str, sorted((root / "curated").glob("curated-*.array_record"))),
              "--output",
              str(data),
              "--max_length",
              "96",
              "--require_teacher_logprobs",
          ]
      )
      == 0
  )
  chat, white = root / "chat", root / "white"
  assert _chat_logits(root / "curated", data, chat) == 0
  white_args = [
      "--teacher",
      teacher,
      "--data",
      str(data),
      "--output",
      str(white),
      "--top_k",
      str(K),
  ]
  white_args += [
      "--batch_size",
      "2",
      "--chunk",
      "16",
      "--dtype",
      "float32",
      "--logprob_dtype",
      "float32",
  ]
  assert cli(["teacher-logits", *white_args]) == 0
  return {"root": root, "data": data, "chat": chat, "white": white, "tok": tok}


def _records(data: Path):
  out = []
  for s in shards.read_manifest(data)["shards"]:
    out += [shards.decode_record(r) for r in shards.read_records(data / s["path"])]
  return out


def test_curated_records_carry_the_teachers_own_log_probs(setup):
  records = read_shard(str(next((setup["root"] / "curated").glob("curated-*.array_record"))))
  kept = [r for r in records if "teacher_logprobs" in r]
  assert len(kept) >= 5, [r["id"] for r in records]  # greedy answers that stopped by themselves
  for r in kept:
    assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
    entries = r["teacher_logprobs"]
    assert "".join(e["token"] for e in entries) == r["messages"][-1]["content"]
    assert all(len(e["top_logprobs"]) == K and isinstance(e["id"], int) for e in entries)
  prepared = shards.read_manifest(setup["data"])
  assert prepared["counts"]["examples"] + prepared["counts"]["skipped"] == len(records)
  assert set(prepared["skipped"]) <= {"teacher_logprobs_mismatch", "no_teacher_logprobs"}


def test_chat_store_equals_the_white_box_store_at_every_answer_position(setup):
  tok = setup["tok"]
  end = tok.convert_tokens_to_ids("<|im_end|>")
  chat, white = teacher_store.TeacherStore(setup["chat"]), teacher_store.TeacherStore(
      setup["white"]
  )
  manifest = teacher_store.read_manifest(setup["chat"])
  assert manifest["partial_positions"] is True and manifest["teacher"]["source"] == "chat"
  assert manifest["top_k"] == K and manifest["chat"]["unscored_positions"] == len(white)
  records = _records(setup["data"])
  assert len(chat) == len(white) == len(records) >= 5
  compared = 0
  for index, (example_id, ids, _) in enumerate(records):
    c, w = chat[index], white[index]
    assert (c.example_id, c.num_tokens, c.sha256) == (w.example_id, w.num_tokens, w.sha256)
    # every trained position but the last, which predicts <|im_end|>
    np.testing.assert_array_equal(c.positions, w.positions[:-1])
    assert ids[w.positions[-1] + 1] == end
    np.testing.assert_array_equal(c.topk_ids, w.topk_ids[:-1])
    np.testing.assert_allclose(c.topk_logprobs, w.topk_logprobs[:-1], rtol=0, atol=LOGPROB_ATOL)
    compared += len(c.positions)
  assert compared >= 10


def test_joined_batches_give_the_unscored_im_end_kd_mask_zero(setup):
  end = setup["tok"].convert_tokens_to_ids("<|im_end|>")
  it = make_iterator(
      setup["data"],
      seq_len=128,
      batch_size=2,
      seed=1,
      num_epochs=1,
      teacher_store=setup["chat"],
      prefetch_batches=0,
  )
  unscored = 0
  for batch in it:
    m, k = batch["loss_mask"] > 0, batch["kd_mask"]
    np.testing.assert_array_equal(k[m & (batch["target_ids"] != end)], 1.0)
    assert not k[~m].any() and not k[batch["target_ids"] == end].any()
    unscored += int((m & (batch["target_ids"] == end)).sum())
    assert not batch["topk_ids"][(m & (k == 0))].any()
  assert unscored > 0


def _edited_curated(setup, tmp_path, edit):
  """A copy of the curated shard whose first record with log-probs is edited by `edit`."""
  src = next((setup["root"] / "curated").glob("curated-*.array_record"))
  records = read_shard(str(src))
  first = next(r for r in records if "teacher_logprobs" in r)
  edit(first)
  out = tmp_path / "curated"
  write_shards(str(out), records, 1)
  return out, first["id"]


def test_an_entry_that_re_tokenises_differently_is_refused_naming_id_and_position(
    setup, tmp_path, capsys
):
  """Entry 1 now reports another token: `chat-logits` on the old data refuses naming the id
  and the store position; `prepare --require_teacher_logprobs` drops the record."""
  tok = setup["tok"]

  def edit(record):
    entry = record["teacher_logprobs"][1]
    other = (entry["id"] + 1) % 1000
    entry.update(id=other, token=tok.decode([other]))

  curated, example_id = _edited_curated(setup, tmp_path, edit)
  assert _chat_logits(curated, setup["data"], tmp_path / "store") == 2
  err = capsys.readouterr().err
  records = _records(setup["data"])
  index = next(i for i, r in enumerate(records) if r[0] == example_id)
  position = int(np.flatnonzero(records[index][2])[0])  # answer token 1 is predicted there
  assert f"example {example_id!r} (record {index}), position {position} (answer token 1)" in err
  assert "re-tokenises to other ids" in err and len(err.strip().splitlines()) == 1
  assert not (tmp_path / "store" / "manifest.json").exists()

  assert (
      cli(
          [
              "prepare",
              "--input",
              *map(str, sorted(curated.glob("*.array_record"))),
              "--output",
              str(tmp_path / "data"),
              "--max_length",
              "96",
              "--require_teacher_logprobs",
          ]
      )
      == 0
  )
  out = capsys.readouterr().out
  assert "teacher_logprobs_mismatch" in out
  assert example_id not in {r[0] for r in _records(tmp_path / "data")}


@pytest.mark.slow  # ~40 s: a train run (compiles the step)
def test_offline_kd_on_the_partial_store_runs_and_its_first_loss_is_the_float64_formula(
    setup, tmp_path
):
  """One step at learning rate 0, so the saved student is the one the loss was computed with:
  L = (1/N) sum m [k((1-a) CE + a KD) + (1-k) CE] on the very batch the run drew."""
  workdir = tmp_path / "run"
  args = [
      "train",
      "--config",
      str(ROOT / "configs/kd/tiny_offline.py"),
      "--workdir",
      str(workdir),
      f"--config.data.path={setup['data']}",
      f"--config.data.teacher_store={setup['chat']}",
      "--config.steps=1",
      "--config.data.batch_size=8",
      "--config.data.seq_len=64",
      "--config.log_every=1",
      "--config.optim.lr=0.0",
      "--config.optim.warmup_steps=0",
      "--config.checkpoint.every_steps=1",
      "--config.checkpoint.async_save=False",
      "--no_progress",
  ]
  assert cli(args) == 0
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert rows[0]["step"] == 1 and rows[0]["kd_tokens"] < rows[0]["tokens"]
  batch = next(
      make_iterator(
          setup["data"],
          seq_len=64,
          batch_size=8,  # the tests' 8 CPU devices split the batch
          seed=0,
          teacher_store=setup["chat"],
          num_epochs=None,
          prefetch_batches=0,
      )
  )
  student = distil_jax.open_model(str(workdir))
  s = np.asarray(
      student(
          jnp.asarray(batch["input_ids"]),
          jnp.asarray(batch["positions"]),
          jnp.asarray(batch["segment_ids"]),
      ),
      np.float64,
  )

  def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))

  m, k = batch["loss_mask"].astype(np.float64), batch["kd_mask"].astype(np.float64)
  ce = -np.take_along_axis(log_softmax(s), batch["target_ids"][..., None], -1)[..., 0]
  # KD compares over the tokenizer's real tokens (`train` sets vocab_columns from the data).
  logq = log_softmax(s[..., :VOCAB])
  logp = batch["topk_logprobs"].astype(np.float64)
  kd = (np.exp(logp) * (logp - np.take_along_axis(logq, batch["topk_ids"], -1))).sum(-1)
  kd = np.where(m * k > 0, kd, 0.0)
  n, n_kd = m.sum(), (m * k).sum()
  want = (m * (k * (0.5 * ce + 0.5 * kd) + (1 - k) * ce)).sum() / n
  assert rows[0]["tokens"] == n and rows[0]["kd_tokens"] == n_kd
  np.testing.assert_allclose(rows[0]["loss"], want, rtol=2e-5)
  np.testing.assert_allclose(rows[0]["kd"], (m * k * kd).sum() / n_kd, rtol=2e-5)


def test_the_converter_runs_without_importing_jax(setup, tmp_path):
  code = (
      "import sys; from distil_jax.cli import main; "
      f"assert main(['chat-logits', '--curated', {str(setup['root'] / 'curated')!r}, "
      f"'--data', {str(setup['data'])!r}, '--output', {str(tmp_path / 'store')!r}]) == 0; "
      "assert not any(m.split('.')[0] in ('jax', 'flax') for m in sys.modules)"
  )
  subprocess.run(
      [sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
  )
  assert teacher_store.read_manifest(tmp_path / "store")["partial_positions"] is True


def _copy_store(src: Path, dst: Path, drop_row=None, partial=True) -> Path:
  """The store at `src` rewritten to `dst`: `drop_row(rec)` -> a row of each record to leave
  out (None: keep all), the manifest flag as given."""
  manifest = teacher_store.read_manifest(src)
  settings = {k: manifest[k] for k in json.loads((src / teacher_store.SETTINGS).read_text())}
  settings["partial_positions"] = partial
  dst.mkdir()
  teacher_store.begin_store(dst, settings)
  store = teacher_store.TeacherStore(src)
  writer = teacher_store.UnitWriter(dst, 0, 0, len(store))
  for index in range(len(store)):
    rec = store[index]
    row = drop_row(rec) if drop_row else None
    if row is not None:
      keep = np.arange(len(rec.positions)) != row
      rec = teacher_store.StoreRecord(
          rec.example_id,
          rec.index,
          rec.sha256,
          rec.num_tokens,
          rec.positions[keep],
          rec.topk_ids[keep],
          rec.topk_logprobs[keep],
          rec.tail[keep],
      )
    writer.write(rec)
  writer.finish()
  teacher_store.finish_store(dst, 1)
  return dst


def _join_all(data, store):
  for _ in make_iterator(
      data, seq_len=128, batch_size=2, seed=1, num_epochs=1, teacher_store=store, prefetch_batches=0
  ):
    pass


def test_the_join_refuses_any_other_missing_position(setup, tmp_path):
  """Without the partial flag the missing `<|im_end|>` position is refused; with it, a store
  that also lacks the first answer position is refused, naming the example and position."""
  records = _records(setup["data"])
  complete = _copy_store(setup["chat"], tmp_path / "unflagged", partial=False)
  with pytest.raises(ValueError, match=r"has no distribution at position \d+"):
    _join_all(setup["data"], complete)
  holed = _copy_store(setup["chat"], tmp_path / "holed", drop_row=lambda rec: 0)
  with pytest.raises(ValueError) as e:
    _join_all(setup["data"], holed)
  example_id, _, mask = next(r for r in records if r[0] in str(e.value))
  first = int(np.flatnonzero(mask)[0]) - 1  # the position predicting answer token 0
  assert f"example {example_id!r}" in str(e.value)
  assert f"has no distribution at position {first} " in str(e.value)
  assert "a partial store may lack only the final trained position" in str(e.value)
  _join_all(setup["data"], _copy_store(setup["chat"], tmp_path / "same"))  # the copy itself joins
