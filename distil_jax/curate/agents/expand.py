"""Expansion: new instructions of a task type from a few in-context seed examples.

New instructions are spread over the task types in proportion to how far each is below its target
ratio; the examples for each request are drawn with a seeded RNG, so the requests (and thus the
journal keys) are the same on every run.
"""

from __future__ import annotations

import collections
import hashlib
import random

from distil_jax.curate.agents.base import Outcome, StageContext, map_records, refused, system_prompt
from distil_jax.curate.client import Failure
from distil_jax.curate.config import AgentConfig
from distil_jax.curate.language import LANGUAGE_NAMES, detect_language
from distil_jax.curate.parsing import Rejection, extract_tag
from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport

AGENT = "expand"


def build_messages(agent_name: str, task: str, examples: list[Record], language: str) -> list[dict]:
  shown = "\n".join(f"<example>{r.instruction}</example>" for r in examples)
  return [
      {
          "role": "system",
          "content": system_prompt(
              agent_name,
              "You write new, self-contained instructions that a user might ask an assistant.",
          ),
      },
      {
          "role": "user",
          "content": (
              f"Here are instructions of task type: {task}\n{shown}\n\n"
              f"Write one new instruction of the same task type, different from all examples, in "
              f"{LANGUAGE_NAMES.get(language, language)}. Do not answer it. "
              "Put it inside <instruction></instruction> tags."
          ),
      },
  ]


async def generate(
    ctx: StageContext,
    agent: AgentConfig,
    agent_name: str,
    *,
    new_id: str,
    task: str,
    examples: list[Record],
    language: str,
    source: str,
) -> Outcome:
  # The same examples may be shown twice on purpose; the seed asks a sampling teacher for a new answer.
  seed = int.from_bytes(hashlib.sha256(new_id.encode()).digest()[:4], "big") >> 1
  completion = await ctx.ask(agent, build_messages(agent_name, task, examples, language), seed=seed)
  if isinstance(completion, Failure):
    return Outcome(failed=completion.reason)
  instruction = extract_tag(completion, "instruction")
  if isinstance(instruction, Rejection):
    return Outcome(filtered=instruction.reason)
  if detect_language(instruction) != language:
    return Outcome(filtered="wrong_language")
  return Outcome(
      (
          Record(
              id=new_id,
              instruction=instruction,
              response="",
              task=task,
              language=language,
              source=source,
              parents=tuple(r.id for r in examples),
              agents=(agent_name,),
          ),
      )
  )


def allocate(counts: dict[str, int], ratios: dict[str, float], num_new: int) -> dict[str, int]:
  """Splits num_new over tasks by their deficit against the target ratios (largest remainder)."""
  total = sum(counts.values()) + num_new
  deficit = {t: max(0.0, ratios.get(t, 0.0) * total - n) for t, n in counts.items()}
  weight = sum(deficit.values())
  if weight <= 0:
    deficit, weight = {t: float(n) for t, n in counts.items()}, float(sum(counts.values()))
  exact = {t: num_new * d / weight for t, d in deficit.items()}
  share = {t: int(v) for t, v in exact.items()}
  for t in sorted(exact, key=lambda t: (share[t] - exact[t], t))[: num_new - sum(share.values())]:
    share[t] += 1
  return share


async def run(records: list[Record], ctx: StageContext, report: StageReport) -> list[Record]:
  config = ctx.config.expand
  by_task: dict[str, list[Record]] = collections.defaultdict(list)
  for r in records:
    by_task[r.task or "other"].append(r)
  ratios = {t.name: t.ratio for t in ctx.config.taxonomy}
  share = (
      allocate({t: len(rs) for t, rs in by_task.items()}, ratios, config.num_new) if by_task else {}
  )
  jobs = []
  for task in sorted(share):
    pool = by_task[task]
    for i in range(share[task]):
      rng = random.Random(f"{ctx.config.seed}:expand:{task}:{i}")
      examples = rng.sample(pool, min(config.num_examples, len(pool)))
      jobs.append((f"{examples[0].id}.x{task}{i}", task, examples))

  async def handle(job) -> Outcome:
    new_id, task, examples = job
    language = detect_language(examples[0].instruction)
    return await generate(
        ctx,
        config.agent,
        AGENT,
        new_id=new_id,
        task=task,
        examples=examples,
        language=language,
        source="expansion",
    )

  new = await map_records(ctx, report, jobs, handle)
  report.added = len(new)
  return records + new
