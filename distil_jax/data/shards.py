"""The on-disk layout of a prepared directory: `manifest.json` plus ArrayRecord shards of records.

A record is bytes: `b"DJT1"`, a little-endian uint32 header length, a UTF-8 JSON header
`{"id": str, "n": int}`, then `n` little-endian int32 token ids, then `n` uint8 assistant-mask
bytes. Decoding is two `np.frombuffer` views, so the pipeline pays no JSON parse per token.

The manifest lists each shard's `bytes` and `sha256`. `verify_shards` checks them when a dataset
is opened: sizes and each shard's record count and first record always (cheap: one stat, one
small read a shard), the sha256 when asked (`distil-jax train` does, once, before training; it
reads every shard once). Every error names the shard file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
from array_record.python.array_record_data_source import ArrayRecordDataSource
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

MAGIC = b"DJT1"
RECORD_FORMAT = (
    "DJT1 magic, uint32 LE header length, JSON header {id, n}, int32 LE ids[n], "
    "uint8 assistant_mask[n]"
)
SHARD_SUFFIX = ".array_record"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "distil_jax.tokenized_chat.v1"
# group_size:1 makes every record its own chunk: fastest random access, which shuffling needs.
WRITER_OPTIONS = "group_size:1"


def encode_record(example_id: str, ids: np.ndarray, mask: np.ndarray) -> bytes:
  header = json.dumps({"id": example_id, "n": int(ids.shape[0])}).encode()
  return b"".join(
      (
          MAGIC,
          struct.pack("<I", len(header)),
          header,
          ids.astype("<i4").tobytes(),
          mask.astype(np.uint8).tobytes(),
      )
  )


def decode_record(record: bytes) -> tuple[str, np.ndarray, np.ndarray]:
  """-> (example id, ids int32 [n], assistant mask uint8 [n])."""
  if record[:4] != MAGIC:
    raise ValueError(f"not a distil-jax token record (starts with {record[:4]!r})")
  (header_len,) = struct.unpack_from("<I", record, 4)
  header = json.loads(record[8 : 8 + header_len])
  n, start = header["n"], 8 + header_len
  ids = np.frombuffer(record, "<i4", count=n, offset=start).astype(np.int32)
  mask = np.frombuffer(record, np.uint8, count=n, offset=start + 4 * n)
  return header["id"], ids, mask


def read_records(path: str | Path) -> list[bytes]:
  """All records of one ArrayRecord file, in order."""
  reader = ArrayRecordReader(str(path))
  try:
    return list(reader.read_all())
  finally:
    reader.close()


class ShardWriter:
  """Writes records into `dir/shard-00000.array_record`, ... rolling over every `shard_size`."""

  def __init__(self, directory: Path, shard_size: int):
    if shard_size < 1:
      raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    self._dir, self._shard_size = Path(directory), shard_size
    self._writer: ArrayRecordWriter | None = None
    self.shards: list[dict] = []  # {"path", "examples", "tokens"} per shard, in order

  def write(self, record: bytes, num_tokens: int) -> None:
    if self._writer is None or self.shards[-1]["examples"] >= self._shard_size:
      self._roll()
    self._writer.write(record)
    self.shards[-1]["examples"] += 1
    self.shards[-1]["tokens"] += num_tokens

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None
      path = self._dir / self.shards[-1]["path"]
      self.shards[-1].update(bytes=path.stat().st_size, sha256=file_sha256(path))

  def _roll(self) -> None:
    self.close()
    name = f"shard-{len(self.shards):05d}{SHARD_SUFFIX}"
    self._writer = ArrayRecordWriter(str(self._dir / name), WRITER_OPTIONS)
    self.shards.append({"path": name, "examples": 0, "tokens": 0})


def read_manifest(directory: str | os.PathLike) -> dict:
  """The manifest of a directory written by `distil-jax prepare`."""
  path = Path(directory) / MANIFEST
  if not path.is_file():
    raise FileNotFoundError(
        f"{path}: no manifest (was the directory made by `distil-jax prepare`?)"
    )
  manifest = json.loads(path.read_text())
  if manifest.get("format") != MANIFEST_FORMAT:
    raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
  return manifest


class ShardError(ValueError):
  """A shard that does not match its manifest; the message names the file."""


def file_sha256(path: str | Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def verify_shards(directory: str | os.PathLike, manifest: dict, *, checksums: bool = False) -> None:
  """Raises ShardError naming the first shard that is missing, truncated, not ours, or (with
  `checksums`) whose sha256 differs from the manifest's."""
  for entry in manifest["shards"]:
    path = Path(directory) / entry["path"]
    if not path.is_file():
      raise ShardError(f"{path}: missing (listed in {Path(directory) / MANIFEST})")
    size = path.stat().st_size
    if "bytes" in entry and size != entry["bytes"]:
      raise ShardError(
          f"{path}: {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)"
      )
    if checksums and "sha256" in entry and file_sha256(path) != entry["sha256"]:
      raise ShardError(f"{path}: sha256 differs from the manifest's (corrupt or replaced)")
    if not entry["examples"]:
      continue
    try:
      reader = ArrayRecordReader(str(path))
      try:
        count = reader.num_records()
        first = reader.read([0])[0] if count else b""
      finally:
        reader.close()
    except RuntimeError as e:
      raise ShardError(f"{path}: not a readable ArrayRecord file ({e or 'truncated?'})") from None
    if count != entry["examples"]:
      raise ShardError(
          f"{path}: {count} records, the manifest says {entry['examples']} (truncated?)"
      )
    if first[:4] != MAGIC:
      raise ShardError(
          f"{path}: not a distil-jax token shard (first record starts with {first[:4]!r}, "
          f"expected {MAGIC!r})"
      )


class ShardSource(ArrayRecordDataSource):
  """grain's ArrayRecord source whose read errors name the shard (and record) they came from:
  a shard damaged after the open-time checks otherwise ends in a bare `RuntimeError`."""

  def _where(self, record_key) -> str:
    reader_idx, position = self._reader_idx_and_position(record_key)
    return f"{self._read_instructions[reader_idx].filename}: record {position + 1}"

  def _checked(self, record_key, record: bytes) -> bytes:
    if record[:4] != MAGIC:
      raise ShardError(
          f"{self._where(record_key)}: not a distil-jax token record (starts with {record[:4]!r})"
      )
    return record

  def __getitem__(self, record_key):
    try:
      record = super().__getitem__(record_key)
    except RuntimeError as e:
      raise ShardError(f"{self._where(record_key)}: unreadable ({e or 'truncated?'})") from None
    return self._checked(record_key, record)

  def __getitems__(self, record_keys):
    try:
      records = super().__getitems__(record_keys)
    except RuntimeError:
      return [self[key] for key in record_keys]  # one at a time, to name the bad one
    return [self._checked(key, record) for key, record in zip(record_keys, records)]
