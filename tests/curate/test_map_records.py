"""A stage over many records keeps input order while only a bounded number of them wait."""

import asyncio
import io

from distil_jax.curate.agents import base
from distil_jax.curate.agents.base import Outcome, StageContext, map_records
from distil_jax.curate.progress import ProgressDisplay
from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport


def test_pending_work_is_bounded_and_order_is_kept(monkeypatch):
  monkeypatch.setattr(base, "MAX_PENDING", 5)
  records = [Record(id=str(i), instruction=f"q{i}", response="") for i in range(40)]
  active, peak = 0, 0

  async def handle(record):
    nonlocal active, peak
    active += 1
    peak = max(peak, active)
    await asyncio.sleep(0.001 * (int(record.id) % 3))  # finish out of order
    active -= 1
    if int(record.id) % 4 == 0:
      return Outcome((), filtered="too_short")
    return Outcome((record.touched_by("test"),))

  ctx = StageContext(
      config=None,
      clients={},
      progress=ProgressDisplay(interval_s=60, tokens_spent=lambda: 0, stream=io.StringIO()),
  )
  report = StageReport(name="test")
  kept = asyncio.run(map_records(ctx, report, records, handle))
  assert peak == 5
  assert [r.id for r in kept] == [str(i) for i in range(40) if i % 4]
  assert report.filtered["too_short"] == 10
