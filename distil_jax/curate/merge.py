"""Combines the parts of a `--num_shards N` run into one set of shards and one manifest."""

from __future__ import annotations

import json
import os

from distil_jax.curate import manifest, shards
from distil_jax.curate.pipeline import MANIFEST_NAME, part_dir


def merge_parts(workdir: str, num_parts: int, num_output_shards: int) -> dict:
  """Concatenates parts 0..N-1 in order (their ids are disjoint: ids are seed line numbers)."""
  records: list[dict] = []
  part_manifests = []
  for index in range(num_parts):
    directory = part_dir(workdir, index, num_parts)
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"part {index} of {num_parts} has no {MANIFEST_NAME} in {directory}: not finished"
      )
    with open(path, encoding="utf-8") as f:
      part = json.load(f)
    if not part["complete"]:
      raise ValueError(f"{path}: part {index} did not complete ({part['endpoint_errors']})")
    part_manifests.append(part)
    for name in part["shards"]:
      records.extend(shards.read_shard(os.path.join(directory, name)))
  ids = [r["id"] for r in records]
  if len(set(ids)) != len(ids):
    raise ValueError(
        "parts share record ids: were they produced from the same input and --num_shards?"
    )
  merged_dir = os.path.join(workdir, "merged")
  names = shards.write_shards(merged_dir, records, num_output_shards)
  result = {
      "merged_from": [part_dir(workdir, i, num_parts) for i in range(num_parts)],
      "records_out": len(records),
      "shards": names,
      "parts": part_manifests,
  }
  manifest.write_json_atomically(os.path.join(merged_dir, MANIFEST_NAME), result)
  return result
