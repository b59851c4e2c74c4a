"""What every agent stage shares: asking its endpoint, applying its reject policy, mapping over records."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Awaitable, Callable

from distil_jax.curate.client import Completion, Failure, TeacherClient
from distil_jax.curate.config import AgentConfig, CurateConfig, OnReject
from distil_jax.curate.parsing import Rejection, extract_tag
from distil_jax.curate.progress import ProgressDisplay
from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport


def system_prompt(agent: str, role: str) -> str:
  """Every agent's system prompt names the agent, so logs and the scripted teacher can tell them apart."""
  return f"You are the curation agent `{agent}`. {role}"


@dataclasses.dataclass(frozen=True)
class Outcome:
  records: tuple[Record, ...] = ()
  filtered: str = ""  # why the record was filtered (a parse rejection or a threshold)
  failed: str = ""  # why its request failed (refusal, retries exhausted)


@dataclasses.dataclass
class StageContext:
  config: CurateConfig
  clients: dict[str, TeacherClient]
  progress: ProgressDisplay

  async def ask(
      self, agent: AgentConfig, messages: list[dict], *, seed: int | None = None
  ) -> Completion | Failure:
    """`seed` tells deliberate repeats of one prompt apart (it is sent, and part of the journal key)."""
    sampling = agent.sampling() if seed is None else {**agent.sampling(), "seed": seed}
    return await self.clients[agent.endpoint].complete(messages, sampling)


def refused(record: Record, agent: AgentConfig, *, filtered: str = "", failed: str = "") -> Outcome:
  """Applies the agent's reject policy to a record it could not process."""
  kept = (record,) if agent.on_reject is OnReject.KEEP else ()
  return Outcome(kept, filtered=filtered, failed=failed)


async def ask_for_tag(
    ctx: StageContext, agent: AgentConfig, record: Record, messages: list[dict], tag: str
) -> str | Outcome:
  """The teacher's answer inside <tag></tag>, or the Outcome that the agent's reject policy gives
  the record when the request fails or the answer does not parse."""
  completion = await ctx.ask(agent, messages)
  if isinstance(completion, Failure):
    return refused(record, agent, failed=completion.reason)
  text = extract_tag(completion, tag)
  if isinstance(text, Rejection):
    return refused(record, agent, filtered=text.reason)
  return text


# More than any endpoint's in-flight limit, so the clients never starve.
MAX_PENDING = 4096


async def map_records(
    ctx: StageContext,
    report: StageReport,
    records: list[Record],
    handle: Callable[[Record], Awaitable[Outcome]],
) -> list[Record]:
  """Runs `handle` on every record concurrently; keeps input order.

  The clients bound what is in flight; a fixed pool of workers bounds what waits, so memory
  does not grow with the input (one pending task per record would, at 100k+ records)."""
  outcomes: list[Outcome | None] = [None] * len(records)
  pending = iter(enumerate(records))

  async def worker() -> None:
    for i, record in pending:
      outcomes[i] = await handle(record)
      ctx.progress.advance()

  ctx.progress.start(report.name, len(records))
  await asyncio.gather(*(worker() for _ in range(min(MAX_PENDING, len(records)))))
  ctx.progress.finish()
  kept: list[Record] = []
  for outcome in outcomes:
    kept.extend(outcome.records)
    reason = outcome.failed or outcome.filtered
    if reason and outcome.records:
      report.kept_unchanged[reason] += 1
    elif outcome.failed:
      report.failed[outcome.failed] += 1
    elif outcome.filtered:
      report.filtered[outcome.filtered] += 1
  return kept
