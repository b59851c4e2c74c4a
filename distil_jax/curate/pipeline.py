"""Runs the configured stages over the seed records and writes shards plus a manifest.

Every stage keeps its input order and every random choice is seeded, and every teacher answer
comes from the journal when it is there, so a rerun after a kill reproduces the same shards
without sending a completed request again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from typing import TextIO

from distil_jax.curate import manifest, shards
from distil_jax.curate.pairs import write_judge_pairs
from distil_jax.curate.agents import classify, expand, judge, refine, rewrite, verify
from distil_jax.curate.agents.base import StageContext
from distil_jax.curate.client import TeacherClient
from distil_jax.curate.config import CurateConfig, StageKind
from distil_jax.curate.diversity import balance_language, dedup, resample_tasks, sample_lengths
from distil_jax.curate.journal import Journal
from distil_jax.curate.progress import ProgressDisplay
from distil_jax.curate.records import SeedError, read_seeds
from distil_jax.curate.stage_report import StageReport

STAGES = {
    StageKind.DEDUP: dedup.run,
    StageKind.CLASSIFY: classify.run,
    StageKind.EXPAND: expand.run,
    StageKind.BALANCE_LANGUAGE: balance_language.run,
    StageKind.REWRITE: rewrite.run,
    StageKind.REFINE: refine.run,
    StageKind.JUDGE: judge.run,
    StageKind.VERIFY: verify.run,
    StageKind.RESAMPLE_TASKS: resample_tasks.run,
    StageKind.SAMPLE_LENGTHS: sample_lengths.run,
}
JOURNAL_NAME = "journal.jsonl"
MANIFEST_NAME = "manifest.json"


@dataclasses.dataclass(frozen=True)
class RunPlan:
  config: CurateConfig
  config_path: str
  input_path: str
  output_dir: str  # holds the journal, the shards and the manifest of this input shard
  shard_index: int = 0
  num_shards: int = 1


def part_dir(workdir: str, shard_index: int, num_shards: int) -> str:
  return (
      workdir
      if num_shards == 1
      else os.path.join(workdir, f"part-{shard_index:05d}-of-{num_shards:05d}")
  )


def _endpoints_used(config: CurateConfig) -> list[str]:
  agents = {
      StageKind.CLASSIFY: [config.classify],
      StageKind.EXPAND: [config.expand.agent],
      StageKind.BALANCE_LANGUAGE: [config.balance_language.agent],
      StageKind.REWRITE: [config.rewrite],
      StageKind.REFINE: [config.refine.agent],
      StageKind.VERIFY: [config.verify],
      StageKind.JUDGE: [config.judge.agent]
      + ([config.judge.student] if config.judge.student else []),
  }
  return sorted({a.endpoint for kind in config.stages for a in agents.get(kind, [])})


def _stage_names(stages: tuple[StageKind, ...]) -> list[str]:
  seen: dict[StageKind, int] = {}
  names = []
  for kind in stages:
    seen[kind] = seen.get(kind, 0) + 1
    names.append(kind.value if seen[kind] == 1 else f"{kind.value}#{seen[kind]}")
  return names


async def run_pipeline(plan: RunPlan, *, progress_stream: TextIO | None = None) -> dict:
  """Curates one input shard; returns the manifest (also written to output_dir/manifest.json)."""
  started = time.monotonic()
  config = plan.config
  records = read_seeds(plan.input_path, shard_index=plan.shard_index, num_shards=plan.num_shards)
  records_in = len(records)
  if not records:
    where = f" (shard {plan.shard_index} of {plan.num_shards})" if plan.num_shards > 1 else ""
    raise SeedError(f"{plan.input_path}: no seed records{where}")
  os.makedirs(plan.output_dir, exist_ok=True)
  journal = Journal.open(os.path.join(plan.output_dir, JOURNAL_NAME))
  reports: list[StageReport] = []
  try:
    async with contextlib.AsyncExitStack() as stack:
      clients = {
          name: await stack.enter_async_context(
              TeacherClient(config.endpoint(name), journal, seed=config.seed)
          )
          for name in _endpoints_used(config)
      }
      progress = ProgressDisplay(
          interval_s=config.progress_interval_s,
          stream=progress_stream or sys.stderr,
          tokens_spent=lambda: sum(
              c.stats.prompt_tokens + c.stats.completion_tokens for c in clients.values()
          ),
      )
      ctx = StageContext(config=config, clients=clients, progress=progress)
      for kind, name in zip(config.stages, _stage_names(config.stages)):
        report = StageReport(name=name, records_in=len(records))
        stage_started = time.monotonic()
        records = await STAGES[kind](records, ctx, report)
        report.records_out, report.seconds = len(records), time.monotonic() - stage_started
        reports.append(report)
        if any(c.fatal for c in clients.values()):
          break
      fatal = {
          name: f"{c.fatal.reason}: {c.fatal.detail}" if c.fatal.detail else c.fatal.reason
          for name, c in clients.items()
          if c.fatal
      }
      endpoint_stats = {name: c.stats.as_dict() for name, c in clients.items()}
  finally:
    journal.close()
  names = (
      []
      if fatal
      else shards.write_shards(
          plan.output_dir, [r.to_json() for r in records], config.num_output_shards
      )
  )
  pair_names = (
      []
      if fatal or StageKind.JUDGE not in config.stages
      else write_judge_pairs(plan.output_dir, records, config)
  )
  result = manifest.build_manifest(
      config_path=plan.config_path,
      shard_index=plan.shard_index,
      num_shards=plan.num_shards,
      records_in=records_in,
      records_out=len(records) if not fatal else 0,
      stages=[r.as_dict() for r in reports],
      endpoints=endpoint_stats,
      shards=names,
      seconds=time.monotonic() - started,
      fatal=fatal,
  )
  result["pairs"] = pair_names  # the judge's teacher-vs-student pairs (distil_jax.pairs.format)
  manifest.write_json_atomically(os.path.join(plan.output_dir, MANIFEST_NAME), result)
  return result
