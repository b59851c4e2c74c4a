"""Instruction rewriting: same intent, clearer and more detailed."""

from __future__ import annotations

from distil_jax.curate.agents.base import Outcome, StageContext, ask_for_tag, map_records, system_prompt
from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport

AGENT = "rewrite"


def build_messages(record: Record) -> list[dict]:
  return [
      {
          "role": "system",
          "content": system_prompt(
              AGENT,
              "You rewrite instructions so they keep their intent but are clearer, more specific and "
              "more detailed. Never answer them. Keep the instruction's language.",
          ),
      },
      {
          "role": "user",
          "content": (
              f"Task type: {record.task or 'unknown'}\n<instruction>{record.instruction}</instruction>\n\n"
              "Return only the rewritten instruction inside <instruction></instruction> tags."
          ),
      },
  ]


async def run(records: list[Record], ctx: StageContext, report: StageReport) -> list[Record]:
  agent = ctx.config.rewrite

  async def handle(record: Record) -> Outcome:
    instruction = await ask_for_tag(ctx, agent, record, build_messages(record), "instruction")
    if isinstance(instruction, Outcome):
      return instruction
    return Outcome((record.touched_by(AGENT, instruction=instruction),))

  return await map_records(ctx, report, records, handle)
