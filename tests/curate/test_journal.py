"""The journal: durable appends, group-committed fsyncs, a torn tail tolerated, corruption reported."""

from __future__ import annotations

import asyncio

import pytest

from distil_jax.curate.journal import Journal, JournalCorrupt, read_journal, request_key


def append_all(path: str, entries: list[dict]) -> int:
  async def go():
    journal = Journal.open(path)
    await asyncio.gather(*(journal.append(e) for e in entries))
    journal.close()
    return journal.fsyncs

  return asyncio.run(go())


def test_concurrent_appends_share_fsyncs_and_all_survive_a_reopen(tmp_path):
  path = str(tmp_path / "j.jsonl")
  fsyncs = append_all(path, [{"key": f"k{i}", "content": "x" * i} for i in range(500)])
  assert fsyncs < 100  # group commit: far fewer flushes than entries
  entries, _ = read_journal(path)
  assert sorted(entries) == sorted(f"k{i}" for i in range(500))


def test_a_torn_last_line_is_dropped_and_appending_continues_cleanly(tmp_path):
  path = str(tmp_path / "j.jsonl")
  append_all(path, [{"key": "a"}, {"key": "b"}])
  with open(path, "ab") as f:
    f.write(b'{"key": "c", "conte')  # killed mid-write
  append_all(path, [{"key": "d"}])
  entries, _ = read_journal(path)
  assert sorted(entries) == ["a", "b", "d"]
  assert open(path).read().count("\n") == 3


def test_a_corrupt_line_before_the_end_names_the_file_and_line(tmp_path):
  path = tmp_path / "j.jsonl"
  path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
  with pytest.raises(JournalCorrupt, match=r"j\.jsonl:2"):
    read_journal(str(path))


def test_request_key_covers_what_decides_the_answer():
  base = dict(
      base_url="http://127.0.0.1:1/v1",
      model="m",
      messages=[{"role": "user", "content": "hi"}],
      sampling={"temperature": 0.0},
  )
  assert request_key(**base) == request_key(**{**base, "sampling": {"temperature": 0.0}})
  for change in (
      {"model": "m2"},
      {"base_url": "http://127.0.0.1:2/v1"},
      {"sampling": {"temperature": 0.5}},
      {"messages": [{"role": "user", "content": "hi!"}]},
  ):
    assert request_key(**{**base, **change}) != request_key(**base)
