"""Curation's judge stage writes its teacher-vs-student pairs in the format of `make-pairs`."""

from __future__ import annotations

import json

from curate.loopback_run import DEMO_CONFIG, fast_overrides, write_seeds
from distil_jax import cli
from distil_jax.curate.shards import read_shard
from distil_jax.pairs import format as pair_format


def test_judge_stage_emits_pairs_with_its_scores(tmp_path, clean_server):
  seeds = write_seeds(str(tmp_path / "seeds.jsonl"), 8)
  answers = tmp_path / "student.jsonl"
  with open(answers, "w") as f:
    for i in range(1, 9):
      f.write(
          json.dumps({"id": f"seed-{i:08d}", "completion": f"STUDENT-ANSWER {i} from a file"})
          + "\n"
      )
  code = cli.main(
      [
          "curate",
          "--config",
          f"{DEMO_CONFIG}:file={answers}",
          "--workdir",
          str(tmp_path / "work"),
          "--input",
          seeds,
          *fast_overrides(clean_server.base_url),
          "--config.stages=classify,refine,judge",
      ]
  )
  assert code == 0
  work = tmp_path / "work"
  manifest = json.loads((work / "manifest.json").read_text())
  records = {r["id"]: r for name in manifest["shards"] for r in read_shard(str(work / name))}
  assert manifest["pairs"] == [f.name for f in pair_format.pair_files([work])]
  pairs = pair_format.read_pairs(work / manifest["pairs"][0])
  assert sorted(p["id"] for p in pairs) == sorted(records)  # every curated record, one pair each
  for pair in pairs:
    record = records[pair["id"]]
    assert pair["prompt"] == record["messages"][:-1]
    assert pair["chosen"] == record["messages"][-1]["content"]
    assert pair["rejected"] == f"STUDENT-ANSWER {int(pair['id'][-8:])} from a file"
    scores = record["lineage"]["scores"]
    assert pair["provenance"]["scores"] == {
        "teacher_score": scores["judge_score"],
        "student_score": scores["student_score"],
        "margin": scores["fit_difficulty"],
    }
    assert pair["provenance"]["source"] == "curate-judge" and pair["provenance"]["student"] == str(
        answers
    )
