"""Where answers come from: a checkpoint in this process, or any OpenAI-compatible endpoint.

Both take conversations (OpenAI chat messages ending with a user turn) and return the assistant's
reply text per conversation, in order. In process: `distil_jax.generate` (greedy by default,
batched, similar prompt lengths share a batch). Endpoint: the curation client (async, retries,
rate limits), whose journal records every answer durably before it is used, so a killed
evaluation rerun with the same journal pays for nothing twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time

from tqdm import tqdm


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
  max_new_tokens: int = 1024
  temperature: float = 0.0  # 0 = greedy
  top_p: float = 1.0
  seed: int = 0


class InProcessAnswers:
  """A checkpoint `distil_jax.loading.open_model` opens (HF directory, model checkpoint, run), with its tokenizer."""

  def __init__(
      self, model_dir: str, *, batch_size: int = 32, dtype=None, mesh=None, progress: bool = True
  ):
    from distil_jax.generate import Generator, stop_ids_for
    from distil_jax.generate.loading import load_tokenizer_for

    self.tokenizer = load_tokenizer_for(model_dir)
    from distil_jax.loading import open_model

    self.mesh = mesh
    self.model = open_model(str(model_dir), dtype=dtype, mesh=mesh)
    self.generator = Generator(self.model, stop_ids=stop_ids_for(self.tokenizer))
    self.batch_size = batch_size
    self.progress = progress
    self.name = model_dir
    self.new_tokens = 0
    self.seconds = 0.0

  def answer(
      self, conversations: list[list[dict]], gen: GenerationConfig, desc: str = "answers"
  ) -> list[str]:
    from distil_jax.generate import Sampling, decode, encode_chat

    sampling = Sampling(gen.temperature, 0, gen.top_p)
    prompts = [encode_chat(self.tokenizer, c) for c in conversations]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    replies: list[str] = [""] * len(prompts)
    bar = tqdm(
        total=len(prompts), desc=desc, unit="prompt", disable=not self.progress, file=sys.stderr
    )
    for b in range(0, len(order), self.batch_size):
      idx = order[b : b + self.batch_size]
      start = time.perf_counter()
      completions = self.generator.generate(
          [prompts[i] for i in idx],
          max_new_tokens=gen.max_new_tokens,
          sampling=sampling,
          seed=[gen.seed] * len(idx),
          salt=idx,
      )
      self.seconds += time.perf_counter() - start
      for i, c in zip(idx, completions):
        self.new_tokens += len(c.tokens)
        replies[i] = decode(self.tokenizer, c.tokens)
      bar.update(len(idx))
    bar.close()
    return replies


def endpoint_config(
    base_url: str,
    model_name: str,
    *,
    name: str = "eval",
    api_key_env: str = "",
    max_in_flight: int = 16,
    timeout_s: float = 600.0,
    max_attempts: int = 8,
):
  from distil_jax.curate.config import EndpointConfig

  return EndpointConfig(
      name=name,
      base_url=base_url.rstrip("/"),
      model=model_name,
      api_key_env=api_key_env,
      max_in_flight=max_in_flight,
      requests_per_minute=0.0,
      tokens_per_minute=0.0,
      timeout_s=timeout_s,
      max_attempts=max_attempts,
      max_retry_s=3600.0,
      backoff_base_s=0.5,
      backoff_max_s=30.0,
  )


async def ask_all(
    client, requests: list[tuple[list[dict], dict]], *, desc: str, progress: bool = True
) -> list:
  """`client.complete` for every (messages, sampling), concurrently (the client caps the in-flight
  count); results in request order, each a `Completion` or a `Failure`."""
  bar = tqdm(total=len(requests), desc=desc, unit="req", disable=not progress, file=sys.stderr)

  async def one(messages, sampling):
    result = await client.complete(messages, sampling)
    bar.update(1)
    return result

  try:
    return await asyncio.gather(*(one(m, s) for m, s in requests))
  finally:
    bar.close()


class EndpointAnswers:
  """Replies from an OpenAI-compatible endpoint through the journaled curation client. A request
  that finally failed (refused, retries exhausted) yields an empty reply and is counted in
  `failures`; a transient failure is not journaled, so a rerun asks again."""

  def __init__(self, endpoint, journal_path: str, *, progress: bool = True):
    self.endpoint = endpoint
    self.journal_path = journal_path
    self.progress = progress
    self.name = f"{endpoint.model}@{endpoint.base_url}"
    self.failures: dict[str, int] = {}
    self.stats: dict = {}

  def answer(
      self, conversations: list[list[dict]], gen: GenerationConfig, desc: str = "answers"
  ) -> list[str]:
    sampling = {
        "temperature": gen.temperature,
        "top_p": gen.top_p,
        "max_tokens": gen.max_new_tokens,
    }
    if gen.temperature > 0:
      sampling["seed"] = gen.seed
    results = run_requests(
        self.endpoint,
        self.journal_path,
        [(c, sampling) for c in conversations],
        desc=desc,
        progress=self.progress,
        stats_into=self.stats,
    )
    replies, failed = [], {}
    for r in results:
      if hasattr(r, "content"):
        replies.append(r.content)
      else:
        failed[r.reason] = failed.get(r.reason, 0) + 1
        replies.append("")
    if results and sum(failed.values()) == len(results):
      raise ValueError(
          f"endpoint {self.endpoint.base_url} (model {self.endpoint.model}): every request failed "
          f"{failed}; first detail: {results[0].detail[:200]!r}"
      )
    for reason, count in failed.items():
      self.failures[reason] = self.failures.get(reason, 0) + count
    if failed:
      print(
          f"eval: {sum(failed.values())} of {len(results)} requests to {self.endpoint.base_url} failed "
          f"{failed}; their answers count as empty",
          file=sys.stderr,
      )
    return replies


def run_requests(
    endpoint,
    journal_path: str,
    requests,
    *,
    desc: str,
    progress: bool = True,
    stats_into: dict | None = None,
) -> list:
  """Sends `requests` through a fresh client and journal and returns their outcomes in order."""
  from distil_jax.curate.client import TeacherClient
  from distil_jax.curate.journal import Journal

  async def go():
    journal = Journal.open(journal_path)
    try:
      async with TeacherClient(endpoint, journal) as client:
        results = await ask_all(client, requests, desc=desc, progress=progress)
        if stats_into is not None:
          for key, value in client.stats.as_dict().items():
            if isinstance(value, int):
              stats_into[key] = stats_into.get(key, 0) + value
        return results
    finally:
      journal.close()

  return asyncio.run(go())
