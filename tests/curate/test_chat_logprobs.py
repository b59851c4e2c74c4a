"""Chat log-probs in curation leave everything else as it was: a journal written before they
existed still answers every request of a config without `top_logprobs`, and the shards are
byte-identical; asking for them changes the request key, sends the record's own conversation,
and keeps the entries in the record."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from curate.loopback_run import DEMO_CONFIG
from distil_jax.cli import main as cli
from distil_jax.curate.client import Completion, TeacherClient
from distil_jax.curate.config import AgentConfig, OnReject
from distil_jax.curate.journal import request_key
from distil_jax.curate.records import Record
from distil_jax.curate.shards import encode, read_shard

# Written by the code before chat log-probs (commit 2594fc8): `distil-jax curate` with the demo
# config, stages classify,rewrite,refine,verify, against the fault server at GOLDEN_URL.
GOLDEN = Path(__file__).parent / "data" / "pre_logprobs"
GOLDEN_URL = "http://127.0.0.1:18765/v1"


def _free_port_is(port: int) -> bool:
  with socket.socket() as s:
    return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_journal_from_before_answers_a_config_without_top_logprobs_byte_identically(
    tmp_path, capsys
):
  """Nothing listens at GOLDEN_URL: a request the old journal did not answer would fail."""
  if not _free_port_is(18765):
    pytest.skip("port 18765 is in use: the journal's URL must be dead for this test")
  old_config = tmp_path / "old_config.py"  # the demo config as it was: no top_logprobs keys
  old_config.write_text(
      "import importlib.util\n"
      f"spec = importlib.util.spec_from_file_location('demo', {DEMO_CONFIG!r})\n"
      "demo = importlib.util.module_from_spec(spec)\n"
      "spec.loader.exec_module(demo)\n"
      "def get_config(arg=None):\n"
      "  c = demo.get_config(arg)\n"
      "  for agent in (c.classify, c.expand.agent, c.balance_language.agent, c.rewrite,\n"
      "                c.refine.agent, c.judge.agent, c.judge.student, c.verify):\n"
      "    del agent['top_logprobs']\n"
      "  return c\n"
  )
  for config in (old_config, Path(DEMO_CONFIG)):
    work = tmp_path / config.stem
    work.mkdir()
    shutil.copy(GOLDEN / "journal.jsonl", work / "journal.jsonl")
    code = cli(
        [
            "curate",
            "--config",
            str(config),
            "--workdir",
            str(work),
            "--input",
            str(GOLDEN / "seeds.jsonl"),
            f"--config.endpoints.teacher.base_url={GOLDEN_URL}",
            f"--config.endpoints.student.base_url={GOLDEN_URL}",
            "--config.stages=classify,rewrite,refine,verify",
            "--config.num_output_shards=1",
            "--config.endpoints.teacher.max_attempts=1",
        ]
    )
    assert code == 0, capsys.readouterr().err[-2000:]
    records = read_shard(str(work / "curated-00000-of-00001.array_record"))
    got = b"".join(encode(r) + b"\n" for r in records)
    assert got == (GOLDEN / "records.jsonl").read_bytes()
    assert (work / "journal.jsonl").read_bytes() == (GOLDEN / "journal.jsonl").read_bytes()
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["complete"] and not manifest["endpoint_errors"]
    assert "teacher_logprobs" not in got.decode()


def test_the_request_key_changes_only_when_log_probs_are_asked_for():
  agent = AgentConfig("teacher", 0.0, 1.0, 64, OnReject.DROP)
  before = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64}  # what sampling() sent before
  assert agent.sampling() == before
  key = lambda sampling: request_key(
      base_url="u", model="m", messages=[{"role": "user", "content": "hi"}], sampling=sampling
  )
  asked = AgentConfig("teacher", 0.0, 1.0, 64, OnReject.DROP, top_logprobs=5)
  assert asked.sampling() == {**before, "logprobs": True, "top_logprobs": 5}
  assert key(asked.sampling()) != key(agent.sampling()) == key(before)


def test_log_probs_round_trip_through_the_journal_and_the_record():
  entries = (
      {
          "token": "Hi",
          "logprob": -0.1,
          "id": 13048,
          "top_logprobs": [{"token": "Hi", "logprob": -0.1, "id": 13048}],
      },
      {
          "token": "!",
          "logprob": -0.2,
          "id": 0,
          "top_logprobs": [{"token": "!", "logprob": -0.2, "id": 0}],
      },
  )
  completion = Completion("k", "Hi!", "stop", 3, 2, entries)
  entry = TeacherClient._to_entry(completion)
  plain = TeacherClient._to_entry(Completion("k", "Hi!", "stop", 3, 2))
  assert "logprobs" not in plain and set(entry) == set(plain) | {"logprobs"}
  assert entry["logprobs"] == list(entries)  # read back by a rerun: tests/data/test_chat_logits.py

  record = Record(id="r", instruction="Say hi.", response="Hi!", teacher_logprobs=entries)
  assert record.to_json()["teacher_logprobs"] == list(entries)
  assert "teacher_logprobs" not in Record(id="r", instruction="Say hi.", response="Hi!").to_json()
  # a later change of the conversation drops log-probs computed on the old one
  assert record.touched_by("rewrite", instruction="Say hello.").teacher_logprobs is None
  assert record.touched_by("verify").teacher_logprobs == entries
