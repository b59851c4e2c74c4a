"""Length-diversity sampling: a subset whose instruction lengths follow a normal distribution.

Each record is weighted by the target normal density at its length divided by the data's own
density there (a histogram), then `keep_fraction` of the records are drawn without replacement
(Efraimidis-Spirakis keys, seeded). Output keeps the input order.
"""

from __future__ import annotations

import collections
import math
import random
import statistics

from distil_jax.curate.config import LengthSamplingConfig
from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport

_BINS = 20


def sample(
    records: list[Record], config: LengthSamplingConfig, seed: int, report: StageReport
) -> list[Record]:
  if len(records) < 2:
    return list(records)
  lengths = [len(r.instruction) for r in records]
  mean = config.mean_chars or statistics.fmean(lengths)
  std = config.std_chars or max(statistics.pstdev(lengths), 1.0)
  low, high = min(lengths), max(lengths)
  width = max((high - low) / _BINS, 1e-9)
  bin_of = [min(int((n - low) / width), _BINS - 1) for n in lengths]
  counts = collections.Counter(bin_of)
  weights = [
      math.exp(-0.5 * ((n - mean) / std) ** 2) / counts[b] + 1e-12 for n, b in zip(lengths, bin_of)
  ]
  rng = random.Random(f"{seed}:sample_lengths")
  keys = [math.log(1.0 - rng.random()) / w for w in weights]  # log of u**(1/w): no underflow
  count = max(1, round(config.keep_fraction * len(records)))
  chosen = set(sorted(range(len(records)), key=lambda i: (-keys[i], i))[:count])
  report.filtered["length_sampling"] += len(records) - len(chosen)
  return [r for i, r in enumerate(records) if i in chosen]


async def run(records: list[Record], ctx, report: StageReport) -> list[Record]:
  return sample(records, ctx.config.sample_lengths, ctx.config.seed, report)
