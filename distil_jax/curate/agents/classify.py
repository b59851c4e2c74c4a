"""Task classification into the configured taxonomy; an answer outside it is rejected, not mapped."""

from __future__ import annotations

from distil_jax.curate.agents.base import Outcome, StageContext, map_records, refused, system_prompt
from distil_jax.curate.client import Failure
from distil_jax.curate.parsing import Rejection, extract_tag
from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport

AGENT = "classify"


def build_messages(record: Record, task_names: tuple[str, ...]) -> list[dict]:
  return [
      {
          "role": "system",
          "content": system_prompt(AGENT, "You assign each instruction exactly one task type."),
      },
      {
          "role": "user",
          "content": (
              "Task types: " + ", ".join(task_names) + ".\n\n"
              f"<instruction>{record.instruction}</instruction>\n\n"
              "Reply with the single best task type inside <task></task> tags, e.g. <task>math</task>."
          ),
      },
  ]


def parse(completion, task_names: tuple[str, ...]) -> str | Rejection:
  payload = extract_tag(completion, "task")
  if isinstance(payload, Rejection):
    return payload
  name = payload.strip().lower().replace(" ", "_").replace("-", "_")
  return name if name in task_names else Rejection("unknown_task")


async def run(records: list[Record], ctx: StageContext, report: StageReport) -> list[Record]:
  agent, names = ctx.config.classify, ctx.config.task_names()

  async def handle(record: Record) -> Outcome:
    completion = await ctx.ask(agent, build_messages(record, names))
    if isinstance(completion, Failure):
      return refused(record, agent, failed=completion.reason)
    task = parse(completion, names)
    if isinstance(task, Rejection):
      return refused(record, agent, filtered=task.reason)
    return Outcome((record.touched_by(AGENT, task=task),))

  return await map_records(ctx, report, records, handle)
