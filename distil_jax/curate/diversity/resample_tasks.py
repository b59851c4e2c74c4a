"""Task resampling: each task type keeps at most its target share of the output, chosen at random (seeded).

Shares are the taxonomy's ratios renormalised over the task types present (a type with no data
leaves no hole), rounded up. Tasks below their quota keep everything; nothing is upsampled,
because repeated examples teach the student to memorise rather than to generalise.
"""

from __future__ import annotations

import collections
import math
import random

from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport


def resample(
    records: list[Record],
    ratios: dict[str, float],
    target_size: int,
    seed: int,
    report: StageReport,
) -> list[Record]:
  size = target_size or len(records)
  by_task: dict[str, list[int]] = collections.defaultdict(list)
  for position, r in enumerate(records):
    by_task[r.task or "other"].append(position)
  present = sum(ratios.get(task, 0.0) for task in by_task) or 1.0
  keep: set[int] = set()
  for task in sorted(by_task):
    positions = by_task[task]
    quota = math.ceil(ratios.get(task, 0.0) / present * size)
    if len(positions) > quota:
      chosen = random.Random(f"{seed}:resample_tasks:{task}").sample(positions, quota)
      report.filtered["over_task_quota"] += len(positions) - quota
      keep.update(chosen)
    else:
      keep.update(positions)
  return [r for position, r in enumerate(records) if position in keep]


async def run(records: list[Record], ctx, report: StageReport) -> list[Record]:
  ratios = {t.name: t.ratio for t in ctx.config.taxonomy}
  return resample(records, ratios, ctx.config.resample_tasks.target_size, ctx.config.seed, report)
