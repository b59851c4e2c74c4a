"""The whole curation pipeline through `distil-jax curate`, against a faulty loopback teacher."""

from __future__ import annotations

import collections
import json
import os
import re


from curate.loopback_run import DEMO_CONFIG, fast_overrides, write_seeds
from distil_jax import cli
from distil_jax.curate.shards import read_shard


def curate(workdir, seeds, base_url, *extra) -> int:
  return cli.main(
      [
          "curate",
          "--config",
          DEMO_CONFIG,
          "--workdir",
          str(workdir),
          "--input",
          str(seeds),
          *fast_overrides(base_url),
          *extra,
      ]
  )


def read_outputs(directory) -> list[dict]:
  manifest = json.loads((directory / "manifest.json").read_text())
  return [r for name in manifest["shards"] for r in read_shard(str(directory / name))]


def test_seeds_become_chat_shards_with_lineage_despite_faults(tmp_path, fault_server):
  seeds = write_seeds(str(tmp_path / "seeds.jsonl"), 24)
  assert curate(tmp_path / "work", seeds, fault_server.base_url) == 0

  records = read_outputs(tmp_path / "work")
  manifest = json.loads((tmp_path / "work" / "manifest.json").read_text())
  assert records and manifest["records_out"] == len(records)
  assert len({r["id"] for r in records}) == len(records)
  for r in records:
    assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
    assert all(m["content"] for m in r["messages"])
    lineage = r["lineage"]
    assert lineage["task"] and lineage["language"] in ("en", "zh") and lineage["source"]
    assert {"refine", "judge", "verify"} <= set(lineage["agents"])
    assert lineage["scores"]["fit_difficulty"] >= 1 and lineage["scores"]["verified"] == 1
  assert {r["lineage"]["source"] for r in records} >= {"seed", "expansion"}

  stages = {s["name"]: s for s in manifest["stages"]}
  assert stages["dedup"]["in"] == 24
  assert stages["expand"]["added"] > 0 and stages["balance_language"]["added"] > 0
  assert (
      stages["refine"]["filtered"].get("truncated", 0)
      + stages["refine"]["failed"].get("content_filter", 0)
      > 0
  )
  assert stages["verify"]["filtered"]["verified_wrong"] > 0
  teacher = manifest["endpoints"]["teacher"]
  assert teacher["completion_tokens"] > 0 and sum(teacher["retries"].values()) > 0
  assert teacher["refused"] == {"content_filter": teacher["refused"]["content_filter"]}
  # Nothing answered twice: every 200 the server sent is a distinct request.
  assert len(fault_server.answered_keys) == len(set(fault_server.answered_keys))


def test_student_answers_can_come_from_a_jsonl_file(tmp_path, clean_server):
  seeds = write_seeds(str(tmp_path / "seeds.jsonl"), 8)
  answers = tmp_path / "student.jsonl"
  with open(answers, "w") as f:
    for i in range(1, 9):
      f.write(
          json.dumps({"id": f"seed-{i:08d}", "completion": "STUDENT-ANSWER from a file"}) + "\n"
      )
  config = f"{DEMO_CONFIG}:file={answers}"
  code = cli.main(
      [
          "curate",
          "--config",
          config,
          "--workdir",
          str(tmp_path / "work"),
          "--input",
          seeds,
          *fast_overrides(clean_server.base_url),
          "--config.stages=classify,refine,judge",
      ]
  )
  assert code == 0
  manifest = json.loads((tmp_path / "work" / "manifest.json").read_text())
  assert "student" not in manifest["endpoints"]
  judged = {s["name"]: s for s in manifest["stages"]}["judge"]
  assert judged["out"] > 0 and judged["in"] == judged["out"] + sum(judged["filtered"].values())


def test_shards_of_the_input_merge_into_the_same_records_as_one_run(tmp_path, clean_server):
  seeds = write_seeds(str(tmp_path / "seeds.jsonl"), 20)
  stages = "--config.stages=classify,rewrite,refine,verify"
  assert curate(tmp_path / "whole", seeds, clean_server.base_url, stages) == 0
  for index in range(3):
    assert (
        curate(
            tmp_path / "parts",
            seeds,
            clean_server.base_url,
            stages,
            "--shard_index",
            str(index),
            "--num_shards",
            "3",
        )
        == 0
    )
  assert (
      curate(
          tmp_path / "parts", seeds, clean_server.base_url, stages, "--merge", "--num_shards", "3"
      )
      == 0
  )
  whole = sorted(read_outputs(tmp_path / "whole"), key=lambda r: r["id"])
  merged = sorted(read_outputs(tmp_path / "parts" / "merged"), key=lambda r: r["id"])
  assert whole == merged


def test_a_malformed_seed_line_is_reported_with_its_file_and_line(tmp_path, clean_server, capsys):
  seeds = tmp_path / "seeds.jsonl"
  seeds.write_text('{"instruction": "ok"}\n\n{"instruction": "broken"\n')
  assert curate(tmp_path / "work", seeds, clean_server.base_url) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and re.search(r"seeds\.jsonl:3: not valid JSON", err[0]), err


def test_an_unknown_override_is_refused(tmp_path, clean_server, capsys):
  seeds = write_seeds(str(tmp_path / "seeds.jsonl"), 2)
  assert curate(tmp_path / "work", seeds, clean_server.base_url, "--config.judge.min_scor=3") == 2
  assert (
      capsys.readouterr().err
      == "distil-jax curate: error: --config.judge.min_scor: no such key in the config\n"
  )
