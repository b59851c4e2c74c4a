"""Exact and near-duplicate removal; the first record (in pipeline order) of a group is kept.

Exact: same normalised instruction (case, whitespace). Near: bottom-k MinHash sketches over
character shingles (which work for Chinese as well as English); records sharing a sketch value are
compared, and a later one whose estimated Jaccard similarity with a kept one reaches the threshold
is dropped. Stdlib only.
"""

from __future__ import annotations

import collections
import hashlib
import heapq

from distil_jax.curate.config import DedupConfig
from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport


def normalise(text: str) -> str:
  return " ".join(text.lower().split())


def sketch(text: str, *, shingle_chars: int, size: int) -> frozenset[int]:
  """The `size` smallest 64-bit hashes of the text's character shingles."""
  text = normalise(text)
  shingles = {text[i : i + shingle_chars] for i in range(max(1, len(text) - shingle_chars + 1))}
  hashes = (
      int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big") for s in shingles
  )
  return frozenset(heapq.nsmallest(size, hashes))


def estimated_jaccard(a: frozenset[int], b: frozenset[int], size: int) -> float:
  """Bottom-k estimate: the share of the union's k smallest hashes that both sketches hold."""
  union_smallest = heapq.nsmallest(size, a | b)
  return (
      sum(1 for h in union_smallest if h in a and h in b) / len(union_smallest)
      if union_smallest
      else 1.0
  )


def remove_duplicates(
    records: list[Record], config: DedupConfig, report: StageReport
) -> list[Record]:
  seen_exact: set[str] = set()
  kept: list[Record] = []
  kept_sketches: list[frozenset[int]] = []
  index: dict[int, list[int]] = collections.defaultdict(list)  # sketch value -> kept positions
  for record in records:
    key = hashlib.sha256(normalise(record.instruction).encode()).hexdigest()
    if key in seen_exact:
      report.filtered["exact_duplicate"] += 1
      continue
    seen_exact.add(key)
    s = sketch(record.instruction, shingle_chars=config.shingle_chars, size=config.sketch_size)
    candidates = {pos for h in s for pos in index.get(h, ())}
    if any(
        estimated_jaccard(s, kept_sketches[pos], config.sketch_size) >= config.near_threshold
        for pos in sorted(candidates)
    ):
      report.filtered["near_duplicate"] += 1
      continue
    for h in s:
      index[h].append(len(kept))
    kept.append(record)
    kept_sketches.append(s)
  return kept


async def run(records: list[Record], ctx, report: StageReport) -> list[Record]:
  return remove_duplicates(records, ctx.config.dedup, report)
