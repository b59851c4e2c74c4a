"""The per-run manifest: counts per stage, tokens per endpoint, timings, shard names."""

from __future__ import annotations

import json
import os


def write_json_atomically(path: str, obj: dict) -> None:
  temporary = os.path.join(os.path.dirname(path) or ".", f".tmp-{os.path.basename(path)}")
  with open(temporary, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=False)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, path)


def build_manifest(
    *,
    config_path: str,
    shard_index: int,
    num_shards: int,
    records_in: int,
    records_out: int,
    stages: list[dict],
    endpoints: dict[str, dict],
    shards: list[str],
    seconds: float,
    fatal: dict[str, str],
) -> dict:
  return {
      "config": config_path,
      "shard_index": shard_index,
      "num_shards": num_shards,
      "records_in": records_in,
      "records_out": records_out,
      "complete": not fatal,
      "endpoint_errors": fatal,
      "stages": stages,
      "endpoints": endpoints,
      "shards": shards,
      "seconds": round(seconds, 3),
  }
