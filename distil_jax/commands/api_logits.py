"""`distil-jax api-logits`: the offline teacher store from an OpenAI-compatible endpoint.

  distil-jax api-logits --endpoint http://host:8000/v1 --model NAME --data DATA_DIR \
      --output STORE_DIR --top_k K [--concurrency 8] [--api_key_env VAR]

Each prepared example (record order) is sent as its exact token ids to `/completions` with
`echo: true, logprobs: K, max_tokens: 1, temperature: 0`; the prompt log-probs at the trained
positions become the store format `distil-jax teacher-logits` writes (mapping rules:
`distil_jax/data/api_teacher.py`), so offline KD reads it unchanged. Work units, resume,
settings lock and temporary names are those of `teacher-logits`; process i of n
(`--num_processes/--process_id`) takes units i, i + n, ...; whichever process finds every unit
done writes `manifest.json`. Prints one JSON line: requests/s, bytes per stored token, and what
the mapping dropped or padded. No JAX is imported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--endpoint",
      required=True,
      metavar="URL",
      help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1",
  )
  parser.add_argument("--model", required=True, help="the `model` field of each request")
  parser.add_argument(
      "--data",
      required=True,
      metavar="DATA_DIR",
      help="a directory written by `distil-jax prepare`",
  )
  parser.add_argument("--output", required=True, metavar="STORE_DIR")
  parser.add_argument(
      "--top_k",
      type=int,
      default=10,
      help="alternatives per position (servers cap it: OpenAI 5, vLLM 20, ours 20)",
  )
  parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
  parser.add_argument(
      "--api_key_env",
      default=None,
      metavar="VAR",
      help="environment variable holding the API key (sent as a Bearer token)",
  )
  parser.add_argument(
      "--max_length",
      type=int,
      default=None,
      help="store positions t < max_length only (default: the data's)",
  )
  parser.add_argument("--logprob_dtype", default="float16", choices=["float16", "float32"])
  parser.add_argument(
      "--tokenizer",
      default=None,
      metavar="HF_DIR",
      help="the shared tokenizer (default: the data's); its fingerprint must "
      "be the data manifest's",
  )
  parser.add_argument("--unit_size", type=int, default=1024, help="records per work unit")
  parser.add_argument(
      "--retries", type=int, default=5, help="retries of a request on 5xx, 429 or a transport error"
  )
  parser.add_argument("--backoff_s", type=float, default=0.5, help="first retry delay, doubling")
  parser.add_argument("--timeout_s", type=float, default=600.0, help="per request")
  parser.add_argument(
      "--return_token_ids",
      action="store_true",
      help="send vLLM's return_tokens_as_token_ids: alternatives come back as "
      "`token_id:N`, none is ambiguous (a server without it refuses)",
  )
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  # Tests: SIGKILL this process halfway through the unit after N finished ones.
  parser.add_argument("--kill_after_units", type=int, default=None, help=argparse.SUPPRESS)


def _fail(message: str) -> int:
  print(f"distil-jax api-logits: {message}", file=sys.stderr)
  return 2


def run(args: argparse.Namespace) -> int:
  from distil_jax.data import api_client, api_teacher, shards, teacher_store

  for name in ("top_k", "concurrency", "unit_size", "num_processes"):
    if getattr(args, name) < 1:
      return _fail(f"--{name} must be >= 1, got {getattr(args, name)}")
  if not 0 <= args.process_id < args.num_processes:
    return _fail(f"--process_id {args.process_id} is not in [0, {args.num_processes})")
  api_key = None
  if args.api_key_env:
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
      return _fail(f"--api_key_env {args.api_key_env}: the variable is not set")
  try:
    data_manifest = shards.read_manifest(args.data)
    tokenizer, settings = _settings(args, data_manifest)
    return asyncio.run(_run(args, data_manifest, tokenizer, settings, api_key))
  except (
      FileNotFoundError,
      ValueError,
      api_client.ApiError,
      api_teacher.EchoError,
      teacher_store.StoreError,
  ) as e:
    return _fail(str(e))


def _settings(args, data_manifest: dict):
  """The shared tokenizer and what the store depends on (a resumed run must match it)."""
  from distil_jax.data import api_client, api_teacher

  return api_teacher.store_settings(
      args.data,
      data_manifest,
      tokenizer_path=args.tokenizer,
      top_k=args.top_k,
      logprob_dtype=args.logprob_dtype,
      max_length=args.max_length,
      unit_size=args.unit_size,
      teacher={
          "source": "api",
          "endpoint": api_client.completions_url(args.endpoint),
          "model": args.model,
      },
  )


async def _run(args, data_manifest: dict, tokenizer, settings: dict, api_key) -> int:
  from array_record.python.array_record_data_source import ArrayRecordDataSource
  from distil_jax.data import api_client, api_teacher, teacher_store

  store_dir = Path(args.output)
  teacher_store.begin_store(store_dir, settings)
  units = teacher_store.unit_ranges(settings["data"]["examples"], args.unit_size)
  mine = [
      u
      for u in range(args.process_id, len(units), args.num_processes)
      if not teacher_store.unit_done(store_dir, u)
  ]
  source = ArrayRecordDataSource(
      [str(Path(args.data) / s["path"]) for s in data_manifest["shards"] if s["examples"]]
  )
  token_map = (
      api_teacher.TokenMap.cached(
          tokenizer, settings["vocab_columns"], settings["tokenizer"]["fingerprint"]
      )
      if mine
      else None
  )
  client = api_client.CompletionsClient(
      args.endpoint,
      concurrency=args.concurrency,
      retries=args.retries,
      backoff_s=args.backoff_s,
      timeout_s=args.timeout_s,
      api_key=api_key,
  )
  job = _Job(args, settings, source, token_map, client)
  started = time.perf_counter()
  try:
    for done, u in enumerate(mine):
      start, end = units[u]
      kill_at = (start + end) // 2 if args.kill_after_units == done else None
      counts = await job.unit(store_dir, u, start, end, kill_at)
      teacher_store.write_json_atomically(
          store_dir / f"{teacher_store.unit_name(u)}.api.json", counts
      )
  finally:
    await client.aclose()
  seconds = time.perf_counter() - started
  traffic = client.traffic
  summary = {
      "units_computed": len(mine),
      "requests": traffic.requests,
      "retries": traffic.retries,
      "seconds": round(seconds, 2),
      "requests_per_s": round(traffic.requests / max(seconds, 1e-9), 2),
      "response_bytes": traffic.response_bytes,
  }
  if all(teacher_store.unit_done(store_dir, u) for u in range(len(units))):
    manifest = teacher_store.finish_store(store_dir, len(units))
    manifest["api"] = teacher_store.sum_unit_counts(store_dir, len(units), "api")
    teacher_store.write_json_atomically(store_dir / teacher_store.MANIFEST, manifest)
    positions = manifest["counts"]["stored_positions"]
    summary.update(
        stored_positions=positions,
        bytes_per_stored_token=manifest["bytes_per_stored_token"],
        payload_bytes_per_stored_token=manifest["payload_bytes_per_stored_token"],
        response_bytes_per_stored_token=round(
            traffic.response_bytes / max(job.counts.positions, 1), 1
        ),
        **{k: v for k, v in manifest["api"].items() if k != "positions"},
        output=str(store_dir),
    )
  print(json.dumps(summary))
  return 0


class _Job:
  """Requests one unit's records concurrently and writes them in record order."""

  def __init__(self, args, settings, source, token_map, client):
    from distil_jax.data import api_teacher

    self.args, self.settings, self.source = args, settings, source
    self.token_map, self.client = token_map, client
    self.dtype = np.dtype(settings["logprob_dtype"])
    self.counts = api_teacher.Counts()

  async def unit(self, store_dir: Path, u: int, start: int, end: int, kill_at) -> dict:
    import dataclasses
    from distil_jax.data import api_teacher, teacher_store

    writer = teacher_store.UnitWriter(store_dir, u, start, end)
    unit_counts = api_teacher.Counts()
    tasks = {asyncio.ensure_future(self._record(i)): i for i in range(start, end)}
    ready: dict[int, tuple] = {}
    following = start
    try:
      pending = set(tasks)
      while pending:
        finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in finished:
          ready[tasks[task]] = task.result()  # raises the first failure
        while following in ready:
          rec, counts = ready.pop(following)
          writer.write(rec)
          unit_counts.add(counts)
          if following == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
          following += 1
    except BaseException:
      for task in tasks:
        task.cancel()
      await asyncio.gather(*tasks, return_exceptions=True)
      writer.abandon()
      raise
    writer.finish()
    self.counts.add(unit_counts)
    return dataclasses.asdict(unit_counts)

  async def _record(self, index: int):
    from distil_jax.data import api_teacher, shards, teacher_store

    example_id, ids, mask = shards.decode_record(self.source[index])
    ids = np.asarray(ids)
    positions = teacher_store.target_positions(mask, self.settings["max_length"])
    k = self.settings["top_k"]
    if not len(positions):  # nothing trained: nothing to ask
      empty = teacher_store.StoreRecord(
          example_id,
          index,
          teacher_store.token_hash(ids),
          len(ids),
          positions,
          np.zeros((0, k), np.int32),
          np.zeros((0, k), self.dtype),
          np.zeros(0, np.float32),
      )
      return empty, api_teacher.Counts()
    sent = ids[: api_teacher.prompt_length(ids, positions)]
    what = f"example {example_id!r} (record {index})"
    body = api_teacher.request_body(self.args.model, sent, k, self.args.return_token_ids)
    answer = await self.client.post(body, what)
    return api_teacher.to_record(
        answer,
        example_id=example_id,
        index=index,
        ids=ids,
        mask=mask,
        max_length=self.settings["max_length"],
        top_k=k,
        token_map=self.token_map,
        logprob_dtype=self.dtype,
        where=f"endpoint {self.client.url}",
    )
