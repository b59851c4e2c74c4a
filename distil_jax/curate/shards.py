"""Final output: ArrayRecord shards of UTF-8 JSON chat records, written under temporary names.

Record i of n goes to shard floor(i * num_shards / n), so shards hold contiguous runs of the
deterministic pipeline order. A shard appears under its final name only once complete.
"""

from __future__ import annotations

import json
import os

from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

SHARD_PATTERN = "curated-{index:05d}-of-{count:05d}.array_record"


def encode(record_json: dict) -> bytes:
  return json.dumps(record_json, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def write_shards(directory: str, records: list[dict], num_shards: int) -> list[str]:
  """Writes records (JSON dicts) to `num_shards` shards; returns their file names."""
  os.makedirs(directory, exist_ok=True)
  names = []
  for index in range(num_shards):
    start, stop = index * len(records) // num_shards, (index + 1) * len(records) // num_shards
    name = SHARD_PATTERN.format(index=index, count=num_shards)
    final = os.path.join(directory, name)
    temporary = os.path.join(directory, f".tmp-{name}")
    writer = ArrayRecordWriter(temporary, "group_size:1")
    for record in records[start:stop]:
      writer.write(encode(record))
    writer.close()
    with open(temporary, "rb") as f:
      os.fsync(f.fileno())
    os.replace(temporary, final)
    names.append(name)
  return names


def read_shard(path: str) -> list[dict]:
  reader = ArrayRecordReader(path)
  try:
    return [json.loads(raw) for raw in reader.read_all()]
  finally:
    reader.close()
