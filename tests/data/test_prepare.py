"""`distil-jax prepare`: every accepted format in, shards + manifest out, bad input counted or fatal."""

import hashlib
import json

import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from distil_jax import cli
from distil_jax.data import shards
from distil_jax.data.chat import ChatEncoder
from distil_jax.data.prepare import PrepareError, prepare_dataset
from distil_jax.tokenizer import offline_tokenizer_id

GOOD = [
    {
        "id": "openai-1",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    },
    {
        "conversations": [
            {"from": "human", "value": "2+2?"},
            {"from": "gpt", "value": "4"},
            {"from": "human", "value": "3+3?"},
            {"from": "gpt", "value": "6"},
        ]
    },
    {"instruction": "Translate to English", "input": "chat", "output": "cat"},
]
BAD_LINES = [  # (line bytes, reason)
    (b'{"messages": [{"role": "user", "content": "x"}', "malformed_json"),
    (b'{"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}', "missing_role"),
    (
        b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}',
        "empty_assistant",
    ),
    (
        b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "y"}]}',
        "non_utf8",
    ),
]


@pytest.fixture
def mixed_jsonl(tmp_path):
  """Good records on lines 1, 2, 4, 6; bad ones on 3, 5, 7, 9; line 8 blank."""
  good = [json.dumps(r).encode() for r in GOOD]
  lines = [
      good[0],
      good[1],
      BAD_LINES[0][0],
      good[2],
      BAD_LINES[1][0],
      good[0],
      BAD_LINES[2][0],
      b"",
      BAD_LINES[3][0],
  ]
  path = tmp_path / "mixed.jsonl"
  path.write_bytes(b"\n".join(lines) + b"\n")
  return path


def _examples(directory):
  manifest = shards.read_manifest(directory)
  return [
      shards.decode_record(r)
      for s in manifest["shards"]
      for r in shards.read_records(directory / s["path"])
  ]


def test_mixed_input_is_tokenized_and_bad_lines_are_counted_by_reason(tmp_path, mixed_jsonl, tok):
  manifest = prepare_dataset([mixed_jsonl], tmp_path / "out", tokenizer=tok)
  assert manifest["counts"] == {
      "records_read": 8,
      "examples": 4,
      "skipped": 4,
      "truncated": 0,
      "duplicate_ids": 1,
  }
  assert manifest["skipped"] == {
      reason: {"count": 1, "first": [f"{mixed_jsonl}:{line}"]}
      for (_, reason), line in zip(BAD_LINES, (3, 5, 7, 9))
  }
  assert manifest["sources"] == [
      {
          "path": str(mixed_jsonl.resolve()),
          "bytes": mixed_jsonl.stat().st_size,
          "sha256": hashlib.sha256(mixed_jsonl.read_bytes()).hexdigest(),
          "examples": 4,
      }
  ]
  assert manifest["tokenizer"]["id"] == offline_tokenizer_id()
  assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest

  examples = _examples(tmp_path / "out")
  expected = ChatEncoder(tok).encode([_messages(r) for r in (GOOD[0], GOOD[1], GOOD[2], GOOD[0])])
  assert [e[0] for e in examples][0] == "openai-1" and examples[1][0].startswith("sha256:")
  for (_, ids, mask), (want_ids, want_mask) in zip(examples, expected):
    assert ids.tolist() == want_ids.tolist() and mask.tolist() == want_mask.tolist()
  tokens = manifest["tokens"]
  assert tokens["total"] == sum(len(e[1]) for e in examples) == manifest["shards"][0]["tokens"]
  assert tokens["assistant_targets"] == sum(int(e[2].sum()) for e in examples)
  assert tokens["min"] <= tokens["p50"] <= tokens["max"]


def test_example_ids_are_stable_across_runs_and_file_positions(tmp_path, jsonl_writer, tok):
  jsonl_writer(tmp_path / "a.jsonl", [GOOD[1], GOOD[2]])
  jsonl_writer(tmp_path / "b.jsonl", [GOOD[0], GOOD[2], GOOD[1]])
  prepare_dataset([tmp_path / "a.jsonl"], tmp_path / "a", tokenizer=tok)
  prepare_dataset([tmp_path / "b.jsonl"], tmp_path / "b", tokenizer=tok)
  ids_a = [e[0] for e in _examples(tmp_path / "a")]
  ids_b = [e[0] for e in _examples(tmp_path / "b")]
  assert ids_b == ["openai-1", ids_a[1], ids_a[0]]


def test_strict_stops_at_the_first_bad_line_naming_file_and_line(tmp_path, mixed_jsonl, tok):
  with pytest.raises(PrepareError, match=rf"{mixed_jsonl}:3: malformed_json"):
    prepare_dataset([mixed_jsonl], tmp_path / "out", tokenizer=tok, strict=True)
  assert list(tmp_path.iterdir()) == [mixed_jsonl]  # neither output nor temporary directory


def test_a_crash_midway_leaves_no_half_written_output(
    tmp_path, make_chats, jsonl_writer, tok, monkeypatch
):
  jsonl_writer(tmp_path / "in.jsonl", make_chats(30))
  real_write, calls = shards.ShardWriter.write, []

  def write_then_crash(self, record, num_tokens):
    calls.append(1)
    if len(calls) > 12:
      raise OSError("disk full")
    real_write(self, record, num_tokens)

  monkeypatch.setattr(shards.ShardWriter, "write", write_then_crash)
  with pytest.raises(OSError, match="disk full"):
    prepare_dataset([tmp_path / "in.jsonl"], tmp_path / "out", tokenizer=tok, shard_size=5)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_existing_output_is_kept_unless_overwrite(tmp_path, jsonl_writer, tok):
  jsonl_writer(tmp_path / "in.jsonl", GOOD)
  prepare_dataset([tmp_path / "in.jsonl"], tmp_path / "out", tokenizer=tok)
  with pytest.raises(PrepareError, match="not empty"):
    prepare_dataset([tmp_path / "in.jsonl"], tmp_path / "out", tokenizer=tok)
  manifest = prepare_dataset(
      [tmp_path / "in.jsonl"], tmp_path / "out", tokenizer=tok, overwrite=True, shard_size=1
  )
  assert [s["path"] for s in manifest["shards"]] == [
      f"shard-0000{i}.array_record" for i in range(3)
  ]
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
      "manifest.json",
      *(s["path"] for s in manifest["shards"]),
  ]


@pytest.mark.parametrize("policy", ["truncate", "drop"])
def test_overlong_examples_follow_the_stated_policy(tmp_path, jsonl_writer, policy, tok):
  long_answer = {
      "id": "long",
      "messages": [
          {"role": "user", "content": "Q"},
          {"role": "assistant", "content": "word " * 200},
      ],
  }
  long_question = {
      "id": "long-q",
      "messages": [
          {"role": "user", "content": "word " * 200},
          {"role": "assistant", "content": "A"},
      ],
  }
  jsonl_writer(tmp_path / "in.jsonl", [GOOD[0], long_answer, long_question])
  manifest = prepare_dataset(
      [tmp_path / "in.jsonl"], tmp_path / "out", tokenizer=tok, max_length=64, overlong=policy
  )
  examples = {e[0]: e for e in _examples(tmp_path / "out")}
  if policy == "truncate":
    assert manifest["counts"]["truncated"] == 1 and len(examples["long"][1]) == 64
    assert manifest["skipped"] == {
        "overlong_no_assistant_left": {"count": 1, "first": [f"{tmp_path / 'in.jsonl'}:3"]}
    }
  else:
    assert manifest["counts"]["truncated"] == 0 and "long" not in examples
    assert manifest["skipped"]["overlong"]["count"] == 2
  assert manifest["tokens"]["max"] <= 64 and manifest["overlong"] == policy


def test_curated_array_record_shards_are_accepted(tmp_path, tok):
  path = tmp_path / "curated-00000.array_record"
  writer = ArrayRecordWriter(str(path), "group_size:1")
  writer.write(
      json.dumps(
          {"id": "cur-1", "messages": GOOD[0]["messages"], "lineage": {"teacher": "qwen2.5-72b"}}
      ).encode()
  )
  writer.write(b"\xff not json")
  writer.close()
  manifest = prepare_dataset([path], tmp_path / "out", tokenizer=tok)
  ((example_id, ids, _),) = _examples(tmp_path / "out")
  assert example_id == "cur-1"
  assert (
      ids.tolist() == tok(tok.apply_chat_template(GOOD[0]["messages"], tokenize=False))["input_ids"]
  )
  assert manifest["skipped"] == {"non_utf8": {"count": 1, "first": [f"{path}:2"]}}


def test_command_line(tmp_path, mixed_jsonl, tok, capsys):
  tok.save_pretrained(tmp_path / "hf")
  argv = [
      "prepare",
      "--input",
      str(mixed_jsonl),
      "--output",
      str(tmp_path / "out"),
      "--tokenizer",
      str(tmp_path / "hf"),
      "--max_length",
      "128",
      "--overlong",
      "drop",
  ]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "wrote 4 examples" in out and f"malformed_json: first at {mixed_jsonl}:3" in out
  manifest = shards.read_manifest(tmp_path / "out")
  assert manifest["tokenizer"]["id"] == str((tmp_path / "hf").resolve())
  assert (manifest["max_length"], manifest["overlong"]) == (128, "drop")
  assert cli.main([*argv[:4], str(tmp_path / "strict"), "--strict"]) == 2
  assert f"{mixed_jsonl}:3: malformed_json" in capsys.readouterr().err


def _messages(record):
  from distil_jax.data.formats import to_messages

  return to_messages(record)
