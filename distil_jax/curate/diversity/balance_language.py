"""Language balancing through the teacher.

Balancing expands the under-represented language (e.g. Chinese) with new instructions written by
the teacher from examples in that language, until minor/major reaches the target ratio.
"""

from __future__ import annotations

import random

from distil_jax.curate.agents import expand
from distil_jax.curate.agents.base import Outcome, StageContext, map_records
from distil_jax.curate.language import detect_language
from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport

AGENT = "balance_language"


async def run(records: list[Record], ctx: StageContext, report: StageReport) -> list[Record]:
  config = ctx.config.balance_language
  major, minor = config.languages
  records = [
      r if r.language else r.touched_by("detect_language", language=detect_language(r.instruction))
      for r in records
  ]
  majors = [r for r in records if r.language == major]
  minors = [r for r in records if r.language == minor]
  wanted = min(config.max_new, max(0, round(config.target_ratio * len(majors)) - len(minors)))
  examples_from = minors or majors  # with no example in the minor language, show the major's
  jobs = []
  for i in range(wanted if examples_from else 0):
    rng = random.Random(f"{ctx.config.seed}:balance_language:{i}")
    examples = rng.sample(examples_from, min(config.num_examples, len(examples_from)))
    jobs.append((f"{examples[0].id}.l{minor}{i}", examples))

  async def handle(job) -> Outcome:
    new_id, examples = job
    return await expand.generate(
        ctx,
        config.agent,
        AGENT,
        new_id=new_id,
        task=examples[0].task or "other",
        examples=examples,
        language=minor,
        source="language_balance",
    )

  new = await map_records(ctx, report, jobs, handle)
  report.added = len(new)
  return records + new
