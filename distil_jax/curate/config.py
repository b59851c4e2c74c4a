"""Frozen, typed curation config: the ml-collections ConfigDict stops here.

`from_config_dict` turns `configs/curate/<name>.py`'s ConfigDict into `CurateConfig`; nothing past
this module reads a ConfigDict or compares stage names as strings.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class StageKind(enum.Enum):
  DEDUP = "dedup"
  CLASSIFY = "classify"
  EXPAND = "expand"
  BALANCE_LANGUAGE = "balance_language"
  REWRITE = "rewrite"
  REFINE = "refine"
  JUDGE = "judge"
  VERIFY = "verify"
  RESAMPLE_TASKS = "resample_tasks"
  SAMPLE_LENGTHS = "sample_lengths"


class OnReject(enum.Enum):
  """What an agent does with a record whose answer could not be parsed or was refused."""

  DROP = "drop"
  KEEP = "keep"  # keep the record unchanged (e.g. the original instruction when a rewrite fails)


@dataclasses.dataclass(frozen=True)
class EndpointConfig:
  name: str
  base_url: str  # e.g. http://127.0.0.1:8000/v1
  model: str
  api_key_env: str  # name of the env var holding the key; "" sends no key
  max_in_flight: int
  requests_per_minute: float  # 0 = unlimited
  tokens_per_minute: float  # 0 = unlimited
  timeout_s: float
  max_attempts: int
  max_retry_s: float  # cap on the total time one request spends retrying
  backoff_base_s: float
  backoff_max_s: float
  # Circuit breaker: the endpoint is declared down, and the run stops, after `breaker_failures`
  # failed attempts in a row with no answer for `breaker_window_s` (a dead URL, 5xx forever), or
  # after `breaker_failures` refusals in a row (404 on every request: a base URL without /v1).
  breaker_failures: int = 16
  breaker_window_s: float = 120.0


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  endpoint: str
  temperature: float
  top_p: float
  max_tokens: int
  on_reject: OnReject
  # > 0: ask for the top-k log-probs of every answer token (`logprobs`/`top_logprobs` of the chat
  # API). The refine stage then sends the record's own conversation (docs/chatlp.md).
  top_logprobs: int = 0

  def sampling(self) -> dict[str, Any]:
    """What the request sends besides model and messages (and what its journal key hashes):
    without log-probs exactly what it was before they existed, so old journals still hit."""
    sampling = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}
    if self.top_logprobs > 0:
      sampling.update(logprobs=True, top_logprobs=self.top_logprobs)
    return sampling


@dataclasses.dataclass(frozen=True)
class TaskType:
  name: str
  ratio: float  # target share after resampling


@dataclasses.dataclass(frozen=True)
class ExpandConfig:
  agent: AgentConfig
  num_new: int  # new instructions in total, spread over task types by their deficit
  num_examples: int  # in-context seed examples per request


@dataclasses.dataclass(frozen=True)
class LanguageBalanceConfig:
  agent: AgentConfig
  languages: tuple[str, str]  # (major, minor): expand the minor language to match the major
  target_ratio: float  # wanted minor/major count ratio
  max_new: int
  num_examples: int


@dataclasses.dataclass(frozen=True)
class RefineConfig:
  agent: AgentConfig
  cot_tasks: tuple[str, ...]  # task types answered with step-by-step reasoning


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
  agent: AgentConfig
  min_score: float  # judge score of the teacher answer, 0-9
  min_fit_difficulty: float  # teacher score minus student score
  student: AgentConfig | None  # student endpoint answering the instructions, or
  student_answers_path: str  # JSONL of student answers (e.g. from `distil-jax generate`)


@dataclasses.dataclass(frozen=True)
class DedupConfig:
  near_threshold: (
      float  # estimated Jaccard similarity of shingle sets at which a record is a near-duplicate
  )
  shingle_chars: int
  sketch_size: int


@dataclasses.dataclass(frozen=True)
class ResampleConfig:
  target_size: int  # 0 = current size; tasks over their quota are downsampled, never upsampled


@dataclasses.dataclass(frozen=True)
class LengthSamplingConfig:
  keep_fraction: float
  mean_chars: float  # 0 = the data's mean
  std_chars: float  # 0 = the data's standard deviation


@dataclasses.dataclass(frozen=True)
class CurateConfig:
  seed: int
  input_path: str
  num_output_shards: int
  progress_interval_s: float
  endpoints: tuple[EndpointConfig, ...]
  taxonomy: tuple[TaskType, ...]
  stages: tuple[StageKind, ...]
  classify: AgentConfig
  expand: ExpandConfig
  balance_language: LanguageBalanceConfig
  rewrite: AgentConfig
  refine: RefineConfig
  judge: JudgeConfig
  verify: AgentConfig
  dedup: DedupConfig
  resample_tasks: ResampleConfig
  sample_lengths: LengthSamplingConfig

  def endpoint(self, name: str) -> EndpointConfig:
    for endpoint in self.endpoints:
      if endpoint.name == name:
        return endpoint
    raise KeyError(f"no endpoint named {name!r}; configured: {[e.name for e in self.endpoints]}")

  def task_names(self) -> tuple[str, ...]:
    return tuple(t.name for t in self.taxonomy)


def _agent(cd) -> AgentConfig:
  return AgentConfig(
      endpoint=cd.endpoint,
      temperature=float(cd.temperature),
      top_p=float(cd.top_p),
      max_tokens=int(cd.max_tokens),
      on_reject=OnReject(cd.on_reject),
      # A config written before the key existed has none: no log-probs, as then.
      top_logprobs=int(cd.get("top_logprobs", 0)),
  )


def _endpoint(name: str, cd) -> EndpointConfig:
  return EndpointConfig(
      name=name,
      base_url=cd.base_url.rstrip("/"),
      model=cd.model,
      api_key_env=cd.api_key_env,
      max_in_flight=int(cd.max_in_flight),
      requests_per_minute=float(cd.requests_per_minute),
      tokens_per_minute=float(cd.tokens_per_minute),
      timeout_s=float(cd.timeout_s),
      max_attempts=int(cd.max_attempts),
      max_retry_s=float(cd.max_retry_s),
      backoff_base_s=float(cd.backoff_base_s),
      backoff_max_s=float(cd.backoff_max_s),
      breaker_failures=int(cd.breaker_failures),
      breaker_window_s=float(cd.breaker_window_s),
  )


def from_config_dict(cd) -> CurateConfig:
  """Validates and freezes a curation ConfigDict (see configs/curate/demo.py for every key)."""
  endpoints = tuple(_endpoint(name, cd.endpoints[name]) for name in sorted(cd.endpoints.keys()))
  taxonomy = tuple(TaskType(name, float(ratio)) for name, ratio in cd.taxonomy.items())
  total = sum(t.ratio for t in taxonomy)
  if taxonomy and abs(total - 1.0) > 1e-3:
    raise ValueError(f"taxonomy ratios must sum to 1, got {total:.4f}")
  j = cd.judge
  config = CurateConfig(
      seed=int(cd.seed),
      input_path=cd.input_path,
      num_output_shards=int(cd.num_output_shards),
      progress_interval_s=float(cd.progress_interval_s),
      endpoints=endpoints,
      taxonomy=taxonomy,
      stages=tuple(StageKind(s) for s in cd.stages),
      classify=_agent(cd.classify),
      expand=ExpandConfig(
          _agent(cd.expand.agent), int(cd.expand.num_new), int(cd.expand.num_examples)
      ),
      balance_language=LanguageBalanceConfig(
          _agent(cd.balance_language.agent),
          tuple(cd.balance_language.languages),
          float(cd.balance_language.target_ratio),
          int(cd.balance_language.max_new),
          int(cd.balance_language.num_examples),
      ),
      rewrite=_agent(cd.rewrite),
      refine=RefineConfig(_agent(cd.refine.agent), tuple(cd.refine.cot_tasks)),
      judge=JudgeConfig(
          _agent(j.agent),
          float(j.min_score),
          float(j.min_fit_difficulty),
          _agent(j.student) if j.student.endpoint else None,
          j.student_answers_path,
      ),
      verify=_agent(cd.verify),
      dedup=DedupConfig(
          float(cd.dedup.near_threshold), int(cd.dedup.shingle_chars), int(cd.dedup.sketch_size)
      ),
      resample_tasks=ResampleConfig(int(cd.resample_tasks.target_size)),
      sample_lengths=LengthSamplingConfig(
          float(cd.sample_lengths.keep_fraction),
          float(cd.sample_lengths.mean_chars),
          float(cd.sample_lengths.std_chars),
      ),
  )
  _check_references(config)
  return config


def _check_references(config: CurateConfig) -> None:
  agents = [
      config.classify,
      config.expand.agent,
      config.balance_language.agent,
      config.rewrite,
      config.refine.agent,
      config.judge.agent,
      config.verify,
  ]
  if config.judge.student is not None:
    agents.append(config.judge.student)
  for agent in agents:
    config.endpoint(agent.endpoint)
  if (
      StageKind.JUDGE in config.stages
      and config.judge.student is None
      and not config.judge.student_answers_path
  ):
    raise ValueError("judge stage needs judge.student.endpoint or judge.student_answers_path")
  others = [a for a in agents if a is not config.refine.agent]
  if any(a.top_logprobs for a in others) or config.refine.agent.top_logprobs < 0:
    raise ValueError("top_logprobs: only refine.agent asks for log-probs, and K must be >= 0")
  if config.num_output_shards < 1:
    raise ValueError("num_output_shards must be >= 1")
