"""Response refinement: the teacher writes or improves the answer; step-by-step for reasoning tasks.

With `refine.agent.top_logprobs = K > 0` the teacher instead answers the record's own
conversation (`[system]` if set, then `user: instruction`: exactly what `Record.to_json` writes
before the assistant turn), with no draft, no step-by-step instruction and no tags, and the
answer is `message.content` verbatim. Its chat log-probs are then the teacher's distributions at
the positions the student trains on, and the record keeps them (`teacher_logprobs`) for
`distil-jax chat-logits` (docs/chatlp.md). A record is filtered when the answer did not stop by
itself (`not_stopped`: a cut answer is not the teacher's), carries no log-probs (`no_logprobs`:
the server ignored the request) or when their token texts do not concatenate to the content
(`logprobs_mismatch`).
"""

from __future__ import annotations

from distil_jax.curate.agents.base import (
    Outcome,
    StageContext,
    ask_for_tag,
    map_records,
    refused,
    system_prompt,
)
from distil_jax.curate.client import Failure
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


def own_conversation(record: Record) -> list[dict]:
  """The record's conversation as the student will see it, without the assistant turn."""
  return record.to_json()["messages"][:-1]


async def _answer_with_logprobs(ctx: StageContext, record: Record) -> Outcome:
  agent = ctx.config.refine.agent
  completion = await ctx.ask(agent, own_conversation(record))
  if isinstance(completion, Failure):
    return refused(record, agent, failed=completion.reason)
  if completion.finish_reason != "stop":
    return refused(record, agent, filtered="not_stopped")
  if not completion.content.strip():
    return refused(record, agent, filtered="empty_answer")
  if completion.logprobs is None:
    return refused(record, agent, filtered="no_logprobs")
  if "".join(e["token"] for e in completion.logprobs) != completion.content:
    return refused(record, agent, filtered="logprobs_mismatch")
  changed = record.touched_by(
      AGENT, response=completion.content, teacher_logprobs=completion.logprobs
  )
  return Outcome((changed,))


async def run(records: list[Record], ctx: StageContext, report: StageReport) -> list[Record]:
  config = ctx.config.refine
  agent = config.agent

  async def handle(record: Record) -> Outcome:
    if agent.top_logprobs > 0:
      return await _answer_with_logprobs(ctx, record)
    cot = record.task in config.cot_tasks
    answer = await ask_for_tag(
        ctx, agent, record, build_messages(record, chain_of_thought=cot), "answer"
    )
    if isinstance(answer, Outcome):
      return answer
    return Outcome((record.touched_by(AGENT, response=answer),))

  return await map_records(ctx, report, records, handle)
