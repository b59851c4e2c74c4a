"""Corrupt or empty data: errors name the file; the manifest's per-shard sha256 is verified;
`prepare` that yields nothing exits non-zero; a killed prepare's temporary directory is removed."""

import json
import shutil
import subprocess
import sys

import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from distil_jax import cli
from distil_jax.data import make_iterator, shards
from distil_jax.data.prepare import PrepareError, prepare_dataset


@pytest.fixture
def data(corpus_dir, tmp_path):
  copy = tmp_path / "prepared"
  shutil.copytree(corpus_dir, copy)
  return copy


def _shard(directory, i=1):
  return directory / shards.read_manifest(directory)["shards"][i]["path"]


def test_the_manifest_holds_each_shards_size_and_sha256(corpus_dir):
  for entry in shards.read_manifest(corpus_dir)["shards"]:
    path = corpus_dir / entry["path"]
    assert entry["bytes"] == path.stat().st_size and entry["sha256"] == shards.file_sha256(path)


def test_a_truncated_shard_is_named_when_the_dataset_opens(data):
  path = _shard(data)
  with open(path, "r+b") as f:
    f.truncate(path.stat().st_size // 3)
  with pytest.raises(
      shards.ShardError, match=rf"{path}: \d+ bytes, the manifest says \d+ \(truncated"
  ):
    make_iterator(data, seq_len=64, batch_size=2)


def test_a_shard_of_other_records_is_named_by_its_bad_magic(data):
  manifest = shards.read_manifest(data)
  entry = manifest["shards"][1]
  for key in ("bytes", "sha256"):  # a manifest from before checksums: only the records can tell
    del entry[key]
  (data / shards.MANIFEST).write_text(json.dumps(manifest))
  writer = ArrayRecordWriter(str(data / entry["path"]), shards.WRITER_OPTIONS)
  for i in range(entry["examples"]):
    writer.write(json.dumps({"id": i}).encode())
  writer.close()
  with pytest.raises(
      shards.ShardError, match=rf"{data / entry['path']}: not a distil-jax token shard"
  ):
    make_iterator(data, seq_len=64, batch_size=2)


def test_a_flipped_byte_fails_the_checksum_and_train_names_the_file_in_one_line(data, capsys):
  path = _shard(data)
  raw = bytearray(path.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  path.write_bytes(bytes(raw))
  with pytest.raises(shards.ShardError, match=rf"{path}: sha256 differs"):
    shards.verify_shards(data, shards.read_manifest(data), checksums=True)
  assert (
      cli.main(
          [
              "train",
              "--config",
              "configs/sft/tiny.py",
              "--workdir",
              str(data.parent / "run"),
              f"--config.data.path={data}",
          ]
      )
      == 2
  )
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and f"{path}: sha256 differs" in err, err
  assert not (data.parent / "run").exists()


@pytest.mark.parametrize("content", [b"", b"\n\n", b'{"messages": []}\n{"oops"\n'])
def test_prepare_that_yields_no_example_fails_and_writes_nothing(tmp_path, tok, content, capsys):
  src = tmp_path / "in.jsonl"
  src.write_bytes(content)
  with pytest.raises(PrepareError, match=rf"no usable examples in {src}"):
    prepare_dataset([src], tmp_path / "out", tokenizer=tok)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_prepare_command_exits_non_zero_on_an_empty_input(tmp_path, capsys):
  (tmp_path / "in.jsonl").write_text("")
  assert (
      cli.main(
          ["prepare", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out")]
      )
      == 2
  )
  assert "no usable examples" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_killed_prepares_temporary_directory_is_removed_by_the_next_run(
    tmp_path, tok, jsonl_writer, make_chats
):
  gone = subprocess.run(
      [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
  )
  abandoned = tmp_path / f".out.tmp-{int(gone.stdout)}-abc12345"
  (abandoned / "half").mkdir(parents=True)
  jsonl_writer(tmp_path / "in.jsonl", make_chats(4))
  prepare_dataset([tmp_path / "in.jsonl"], tmp_path / "out", tokenizer=tok)
  assert not abandoned.exists() and (tmp_path / "out" / shards.MANIFEST).is_file()


def test_a_shard_damaged_after_the_open_checks_is_named_when_read(data):
  it = make_iterator(data, seq_len=64, batch_size=2, prefetch_batches=0)
  for entry in shards.read_manifest(data)["shards"]:  # every shard, so the first read hits one
    with open(data / entry["path"], "r+b") as f:
      f.truncate(1000)
  with pytest.raises(
      shards.ShardError, match=rf"{data}/shard-\d+\.array_record: record \d+: unreadable"
  ):
    next(it)
