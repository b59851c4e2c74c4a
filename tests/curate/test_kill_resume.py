"""kill -9 at any moment, rerun: no completed request is sent again and the shards are byte-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from curate.loopback_run import DEMO_CONFIG, REPO, fast_overrides, write_seeds
from distil_jax.curate.journal import read_journal


def curate_command(workdir, seeds, base_url) -> list[str]:
  return [
      sys.executable,
      "-m",
      "distil_jax.cli",
      "curate",
      "--config",
      DEMO_CONFIG,
      "--workdir",
      str(workdir),
      "--input",
      seeds,
      *fast_overrides(base_url),
  ]


def run_to_completion(workdir, seeds, base_url) -> None:
  result = subprocess.run(
      curate_command(workdir, seeds, base_url),
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode == 0, result.stderr[-3000:]


def kill_after_journal_lines(workdir, seeds, base_url, lines: int) -> None:
  journal = os.path.join(workdir, "journal.jsonl")
  process = subprocess.Popen(
      curate_command(workdir, seeds, base_url),
      cwd=REPO,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  deadline = time.monotonic() + 60
  try:
    while time.monotonic() < deadline and process.poll() is None:
      if os.path.exists(journal) and open(journal, "rb").read().count(b"\n") >= lines:
        break
      time.sleep(0.02)
    assert (
        process.poll() is None
    ), "the run finished before it could be killed; raise the server delay"
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def shard_bytes(workdir) -> dict[str, bytes]:
  return {
      name: open(os.path.join(workdir, name), "rb").read()
      for name in sorted(os.listdir(workdir))
      if name.endswith(".array_record")
  }


def test_killed_twice_then_resumed_gives_the_uninterrupted_shards_and_resends_nothing(
    tmp_path, fault_server
):
  fault_server.delay_s = 0.03  # long enough that the kills land mid-run
  seeds = write_seeds(str(tmp_path / "seeds.jsonl"), 24)
  killed = str(tmp_path / "killed")

  kill_after_journal_lines(killed, seeds, fault_server.base_url, lines=40)
  kill_after_journal_lines(killed, seeds, fault_server.base_url, lines=150)
  durable, _ = read_journal(os.path.join(killed, "journal.jsonl"))
  assert 150 <= len(durable) and not os.path.exists(os.path.join(killed, "manifest.json"))
  answered_before_resume = len(fault_server.answered_keys)

  run_to_completion(killed, seeds, fault_server.base_url)
  resent = set(fault_server.answered_keys[answered_before_resume:]) & set(durable)
  assert not resent, f"{len(resent)} journaled requests were sent again"

  run_to_completion(str(tmp_path / "whole"), seeds, fault_server.base_url)
  assert not [n for n in os.listdir(killed) if n.startswith(".tmp-")]
  whole, resumed = shard_bytes(str(tmp_path / "whole")), shard_bytes(killed)
  assert len(whole) == 2 and resumed == whole
