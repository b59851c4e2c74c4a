"""The teacher client over real loopback HTTP: every fault is retried or refused, nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from distil_jax.curate.client import Completion, Failure, TeacherClient
from distil_jax.curate.config import EndpointConfig
from distil_jax.curate.journal import Journal, read_journal
from distil_jax.curate.testing.fault_server import CONTENT_FILTER_WORD, FAULTS, FaultPlan, FaultServer


def endpoint(base_url: str, **changes) -> EndpointConfig:
  fields = dict(
      name="teacher",
      base_url=base_url,
      model="m",
      api_key_env="",
      max_in_flight=32,
      requests_per_minute=0.0,
      tokens_per_minute=0.0,
      timeout_s=0.5,
      max_attempts=10,
      max_retry_s=20.0,
      backoff_base_s=0.02,
      backoff_max_s=0.2,
  )
  fields.update(changes)
  return EndpointConfig(**fields)


def prompt(i: int, extra: str = "") -> list[dict]:
  return [
      {"role": "system", "content": "You are the curation agent `verify`."},
      {
          "role": "user",
          "content": f"<instruction>question {i}{extra}</instruction><answer>{i}</answer>",
      },
  ]


async def complete_all(ep: EndpointConfig, journal_path: str, prompts: list[list[dict]]):
  journal = Journal.open(journal_path)
  try:
    async with TeacherClient(ep, journal) as client:
      results = await asyncio.gather(*(client.complete(p, {"max_tokens": 16}) for p in prompts))
      return results, client.stats
  finally:
    journal.close()


def test_every_fault_kind_is_retried_and_each_request_is_answered_once(tmp_path, fault_server):
  prompts = [prompt(i) for i in range(120)]
  results, stats = asyncio.run(
      complete_all(endpoint(fault_server.base_url), str(tmp_path / "j.jsonl"), prompts)
  )

  assert all(isinstance(r, Completion) for r in results), [
      r for r in results if isinstance(r, Failure)
  ]
  assert set(fault_server.injected) == set(
      FAULTS
  )  # each of the eight faults happened at least once
  assert sum(stats.retries.values()) == sum(fault_server.injected.values())
  entries, _ = read_journal(str(tmp_path / "j.jsonl"))
  assert sorted(entries) == sorted(r.key for r in results)  # journaled once each, none lost
  assert len(fault_server.answered_keys) == len(set(fault_server.answered_keys)) == 120


def test_a_journaled_request_is_never_sent_again(tmp_path, clean_server):
  prompts = [prompt(i) for i in range(20)]
  first, _ = asyncio.run(
      complete_all(endpoint(clean_server.base_url), str(tmp_path / "j.jsonl"), prompts)
  )
  second, stats = asyncio.run(
      complete_all(endpoint(clean_server.base_url), str(tmp_path / "j.jsonl"), prompts)
  )
  assert first == second
  assert stats.sent == 0 and stats.from_journal == 20
  assert len(clean_server.answered_keys) == 20


def test_content_filter_refusal_is_recorded_and_not_retried(tmp_path, clean_server):
  results, stats = asyncio.run(
      complete_all(
          endpoint(clean_server.base_url),
          str(tmp_path / "j.jsonl"),
          [prompt(1, CONTENT_FILTER_WORD), prompt(2)],
      )
  )
  assert isinstance(results[0], Failure) and results[0].reason == "content_filter"
  assert isinstance(results[1], Completion)
  assert stats.sent == 2 and not stats.retries
  assert read_journal(str(tmp_path / "j.jsonl"))[0][results[0].key]["reason"] == "content_filter"


def test_a_bad_api_key_stops_the_endpoint_without_journaling_or_leaking_the_key(
    tmp_path, monkeypatch
):
  server = FaultServer(api_key="right-key")
  url = server.start_in_thread()
  monkeypatch.setenv("TEACHER_KEY", "sk-wrong-secret-123")
  try:
    results, stats = asyncio.run(
        complete_all(
            endpoint(url, api_key_env="TEACHER_KEY"),
            str(tmp_path / "j.jsonl"),
            [prompt(i) for i in range(10)],
        )
    )
  finally:
    server.stop()
  assert all(isinstance(r, Failure) and r.reason == "unauthorized" for r in results)
  assert not stats.retries
  assert os.path.getsize(tmp_path / "j.jsonl") == 0  # a rerun with the right key sends them all
  assert "sk-wrong-secret-123" not in repr(results) + repr(stats.as_dict())


def test_a_request_with_the_right_key_is_answered(tmp_path, monkeypatch):
  server = FaultServer(api_key="right-key")
  url = server.start_in_thread()
  monkeypatch.setenv("TEACHER_KEY", "right-key")
  try:
    results, _ = asyncio.run(
        complete_all(
            endpoint(url, api_key_env="TEACHER_KEY"), str(tmp_path / "j.jsonl"), [prompt(0)]
        )
    )
  finally:
    server.stop()
  assert isinstance(results[0], Completion)
  assert "right-key" not in (tmp_path / "j.jsonl").read_text()


def test_retry_after_is_honoured_before_the_next_attempt(tmp_path):
  server = FaultServer(
      faults=FaultPlan(fault_rate=1.0, max_faults_per_request=1, retry_after_s=0.4)
  )
  url = server.start_in_thread()
  try:
    # Every first attempt fails; the fault kind depends on the body hash, so some of 16 are 429s.
    started = time.monotonic()
    results, stats = asyncio.run(
        complete_all(
            endpoint(url, backoff_base_s=0.001),
            str(tmp_path / "j.jsonl"),
            [prompt(i) for i in range(16)],
        )
    )
    elapsed = time.monotonic() - started
  finally:
    server.stop()
  assert all(isinstance(r, Completion) for r in results)
  assert stats.retries["http_429"] >= 1
  assert elapsed >= 0.4  # a 429 waited out its Retry-After / retry-after-ms, not the 1 ms backoff


def test_total_retry_time_is_capped_and_the_failure_is_left_for_a_rerun(tmp_path):
  server = FaultServer(faults=FaultPlan(fault_rate=1.0, max_faults_per_request=10**6, slow_s=2.0))
  url = server.start_in_thread()
  try:
    started = time.monotonic()
    results, _ = asyncio.run(
        complete_all(
            endpoint(url, max_retry_s=0.5, max_attempts=1000),
            str(tmp_path / "j.jsonl"),
            [prompt(0)],
        )
    )
  finally:
    server.stop()
  assert time.monotonic() - started < 3.0
  assert isinstance(results[0], Failure) and results[0].reason.startswith("retries_exhausted:")
  assert os.path.getsize(tmp_path / "j.jsonl") == 0


@pytest.mark.parametrize("per_minute", [600.0])
def test_requests_per_minute_bucket_paces_requests_after_its_burst(
    tmp_path, clean_server, per_minute
):
  # A bucket holds one minute's worth (here 600); draining 600 then 5 more takes about 5 / 10 per s.
  from distil_jax.curate.rate_limit import TokenBucket

  async def drain():
    bucket = TokenBucket(per_minute)
    for _ in range(600):
      await bucket.acquire(1)
    started = time.monotonic()
    for _ in range(5):
      await bucket.acquire(1)
    return time.monotonic() - started

  assert 0.4 <= asyncio.run(drain()) <= 1.5
