"""Verification: a 0/1 correctness check of the answer; wrong answers are dropped."""

from __future__ import annotations

from distil_jax.curate.agents.base import Outcome, StageContext, map_records, refused, system_prompt
from distil_jax.curate.client import Failure
from distil_jax.curate.parsing import Rejection, extract_int
from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport

AGENT = "verify"


def build_messages(record: Record) -> list[dict]:
  return [
      {
          "role": "system",
          "content": system_prompt(AGENT, "You check answers for correctness, strictly."),
      },
      {
          "role": "user",
          "content": (
              f"<instruction>{record.instruction}</instruction>\n<answer>{record.response}</answer>\n\n"
              "Is the answer correct and complete? Reply <verdict>1</verdict> if so, <verdict>0</verdict> if not."
          ),
      },
  ]


async def run(records: list[Record], ctx: StageContext, report: StageReport) -> list[Record]:
  agent = ctx.config.verify

  async def handle(record: Record) -> Outcome:
    if not record.response:
      return Outcome(filtered="no_response")
    completion = await ctx.ask(agent, build_messages(record))
    if isinstance(completion, Failure):
      return refused(record, agent, failed=completion.reason)
    verdict = extract_int(completion, "verdict", low=0, high=1)
    if isinstance(verdict, Rejection):
      return refused(record, agent, filtered=verdict.reason)
    if verdict == 0:
      return Outcome(filtered="verified_wrong")
    return Outcome((record.touched_by(AGENT).with_scores(verified=1.0),))

  return await map_records(ctx, report, records, handle)
