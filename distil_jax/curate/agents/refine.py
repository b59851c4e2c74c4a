"""Response refinement: the teacher writes or improves the answer; step-by-step for reasoning tasks."""

from __future__ import annotations

from distil_jax.curate.agents.base import Outcome, StageContext, ask_for_tag, map_records, system_prompt
from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport

AGENT = "refine"

_COT = (
    "Think step by step: show the reasoning (or, for code, the approach and the complete code in a fenced "
    "block), then state the final answer clearly."
)
_DIRECT = "Answer directly, with a clear structure and an appropriate length."


def build_messages(record: Record, *, chain_of_thought: bool) -> list[dict]:
  draft = (
      f"\n\nA draft answer to improve (format, style, length, correctness):\n<draft>{record.response}</draft>"
      if record.response
      else ""
  )
  return [
      {
          "role": "system",
          "content": system_prompt(AGENT, "You write the best possible answer to an instruction."),
      },
      {
          "role": "user",
          "content": (
              f"<instruction>{record.instruction}</instruction>{draft}\n\n{_COT if chain_of_thought else _DIRECT}\n"
              "Put the complete final answer inside <answer></answer> tags."
          ),
      },
  ]


async def run(records: list[Record], ctx: StageContext, report: StageReport) -> list[Record]:
  config = ctx.config.refine
  agent = config.agent

  async def handle(record: Record) -> Outcome:
    cot = record.task in config.cot_tasks
    answer = await ask_for_tag(
        ctx, agent, record, build_messages(record, chain_of_thought=cot), "answer"
    )
    if isinstance(answer, Outcome):
      return answer
    return Outcome((record.touched_by(AGENT, response=answer),))

  return await map_records(ctx, report, records, handle)
