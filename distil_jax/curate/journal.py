"""Append-only, fsync'd journal of completed teacher requests, keyed by a request hash.

A response counts as done only once its line is durable. Appends are group-committed: lines that
arrive while an fsync is in progress are written and fsync'd together by the next one, so a single
disk flush covers many responses. A torn last line (kill -9 mid-write) is dropped on open; a bad
line anywhere else is corruption and raises with its file and line number.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any


def request_key(
    *, base_url: str, model: str, messages: list[dict], sampling: dict[str, Any]
) -> str:
  """Hash of everything that determines a request's answer (never the API key)."""
  canonical = json.dumps(
      {"url": base_url, "model": model, "messages": messages, "sampling": sampling},
      sort_keys=True,
      ensure_ascii=False,
      separators=(",", ":"),
  )
  return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class JournalCorrupt(ValueError):
  pass


def read_journal(path: str) -> tuple[dict[str, dict], int]:
  """Returns (entries by key, byte offset just past the last complete line).

  Bytes after the last newline are a torn append (the process died mid-write, the entry was never
  acknowledged) and are ignored; a complete line that does not parse is corruption.
  """
  entries: dict[str, dict] = {}
  if not os.path.exists(path):
    return entries, 0
  with open(path, "rb") as f:
    data = f.read()
  good_end = data.rfind(b"\n") + 1
  for lineno, raw in enumerate(data[:good_end].splitlines(), start=1):
    if not raw.strip():
      continue
    try:
      entry = json.loads(raw)
      entries[entry["key"]] = entry
    except (ValueError, KeyError, TypeError) as e:
      raise JournalCorrupt(f"{path}:{lineno}: corrupt journal line ({e})") from None
  return entries, good_end


class Journal:
  """Open with `await Journal.open(path)`; `await append(entry)` returns once the entry is durable."""

  def __init__(self, path: str, entries: dict[str, dict], fd: int):
    self.path = path
    self._entries = entries
    self._fd = fd
    self._pending: list[tuple[bytes, asyncio.Future]] = []
    self._flusher: asyncio.Task | None = None
    self.fsyncs = 0

  @classmethod
  def open(cls, path: str) -> "Journal":
    entries, good_end = read_journal(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.ftruncate(fd, good_end)  # drop a torn tail before appending after it
    os.lseek(fd, good_end, os.SEEK_SET)
    return cls(path, entries, fd)

  def __len__(self) -> int:
    return len(self._entries)

  def get(self, key: str) -> dict | None:
    return self._entries.get(key)

  async def append(self, entry: dict) -> None:
    line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    done = asyncio.get_running_loop().create_future()
    self._pending.append((line, done))
    if self._flusher is None or self._flusher.done():
      self._flusher = asyncio.create_task(self._flush_until_empty())
    await done
    self._entries[entry["key"]] = entry

  async def _flush_until_empty(self) -> None:
    while self._pending:
      batch, self._pending = self._pending, []
      try:
        await asyncio.to_thread(self._write_and_sync, b"".join(line for line, _ in batch))
      except BaseException as e:  # the waiters must learn the entry is not durable
        for _, done in batch:
          if not done.done():
            done.set_exception(e)
        raise
      self.fsyncs += 1
      for _, done in batch:
        if not done.done():
          done.set_result(None)

  def _write_and_sync(self, data: bytes) -> None:
    view = memoryview(data)
    while view:
      view = view[os.write(self._fd, view) :]
    os.fsync(self._fd)

  def close(self) -> None:
    os.close(self._fd)
