"""A teacher that is down or refuses everything stops the run with a non-zero exit naming it; only
final answers are journaled, so a rerun after the server is fixed sends the rest again."""

from __future__ import annotations

import json
import socket

import pytest

from curate.loopback_run import DEMO_CONFIG, fast_overrides, write_seeds
from distil_jax import cli
from distil_jax.curate.journal import read_journal
from distil_jax.curate.testing.fault_server import FaultServer

# A retry budget the breaker must beat: without it each request would retry for minutes.
PATIENT = {
    f"endpoints.{n}.{k}": v
    for n in ("teacher", "student")
    for k, v in (
        ("max_attempts", 1000),
        ("max_retry_s", 600.0),
        ("breaker_window_s", 1.0),
        ("breaker_failures", 8),
    )
}


def curate(workdir, seeds, base_url, **extra) -> int:
  return cli.main(
      [
          "curate",
          "--config",
          DEMO_CONFIG,
          "--workdir",
          str(workdir),
          "--input",
          str(seeds),
          *fast_overrides(base_url, **{**PATIENT, **extra}),
      ]
  )


@pytest.fixture
def seeds(tmp_path):
  return write_seeds(str(tmp_path / "seeds.jsonl"), 12)


def refusing_server(status: int | None):
  server = FaultServer(always_status=status)
  server.base_url = server.start_in_thread()
  return server


def test_a_dead_url_stops_the_run_naming_the_endpoint_and_cause(tmp_path, seeds, capsys):
  with socket.socket() as s:  # a port nobody listens on: connection refused
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
  assert curate(tmp_path / "work", seeds, dead) == 1
  err = capsys.readouterr().err
  assert (
      f"endpoint 'teacher' stopped the run: endpoint_down:connection: {dead}/chat/completions"
      in err
  )
  manifest = json.loads((tmp_path / "work" / "manifest.json").read_text())
  assert manifest["complete"] is False and manifest["records_out"] == 0 and manifest["shards"] == []


@pytest.mark.parametrize("status", [503, 400])
def test_an_endpoint_answering_only_errors_stops_the_run(tmp_path, seeds, capsys, status):
  server = refusing_server(status)
  try:
    assert curate(tmp_path / "work", seeds, server.base_url) == 1
  finally:
    server.stop()
  err = capsys.readouterr().err
  assert f"endpoint_down:http_{status}: {server.base_url}/chat/completions" in err
  assert (
      "failed requests by cause" in err
      and f"http_{status}" in err.split("failed requests by cause")[1]
  )
  assert (
      read_journal(str(tmp_path / "work" / "journal.jsonl"))[0] == {}
  )  # nothing journaled as final


def test_a_base_url_without_v1_is_a_404_on_every_request_and_stops_the_run(tmp_path, seeds, capsys):
  server = refusing_server(None)
  try:
    assert curate(tmp_path / "work", seeds, server.base_url[: -len("/v1")]) == 1
  finally:
    server.stop()
  assert "endpoint_down:http_404" in capsys.readouterr().err
  assert server.requests <= 8 + 64  # stopped after the streak (plus what was already in flight)


def test_404s_are_not_journaled_so_a_rerun_after_the_fix_sends_them_again(tmp_path, seeds):
  server = refusing_server(404)  # vLLM while the model name is wrong or not loaded yet
  try:
    assert curate(tmp_path / "work", seeds, server.base_url) == 1
    assert read_journal(str(tmp_path / "work" / "journal.jsonl"))[0] == {}
    server.always_status = None  # the model is loaded now
    assert curate(tmp_path / "work", seeds, server.base_url) == 0
  finally:
    server.stop()
  manifest = json.loads((tmp_path / "work" / "manifest.json").read_text())
  assert manifest["complete"] and manifest["records_out"] > 0
  assert manifest["endpoints"]["teacher"]["from_journal"] == 0


def test_an_empty_seed_file_is_an_error_not_an_empty_dataset(tmp_path, capsys):
  empty = tmp_path / "seeds.jsonl"
  empty.write_text("\n")
  assert curate(tmp_path / "work", empty, "http://127.0.0.1:9/v1") == 2
  assert f"{empty}: no seed records" in capsys.readouterr().err


def test_a_run_that_produces_no_records_exits_non_zero(tmp_path, seeds, capsys, clean_server):
  # Every record fails the judge's threshold: the run completes but yields nothing.
  assert curate(tmp_path / "work", seeds, clean_server.base_url, **{"judge.min_score": 10.0}) == 1
  assert "no records survived the stages" in capsys.readouterr().err
