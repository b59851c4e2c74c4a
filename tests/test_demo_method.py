"""`make demo`'s pipeline (tools/demo_method.py) at its smallest size: every stage runs through the
real command line, leaves its marker and its outputs, the table has every row, and a rerun resumes
(skips every finished stage) instead of starting over."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = ("sft", "sft_more", "kd", "kd_offline", "kd_chat", "fusion", "dpo")
STAGES = (
    "world",
    "inits",
    "teacher",
    "curate",
    *RUNS,
    "check_export",
    "eval_teacher",
    "eval_student_init",
    *(f"eval_{r}" for r in RUNS),
    "report",
)
# One worker runs the whole module, so the (several-minute) pipeline runs once, not per worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo_method")]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  work = tmp_path_factory.mktemp("demo")
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)  # one host device, as `make demo` runs
  proc = subprocess.run(
      [sys.executable, "tools/demo_method.py", "--workdir", str(work), "--size", "test"],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      check=False,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return work, proc.stdout, env


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_every_stage_ran_and_left_its_outputs(demo_run):
  work, out, _ = demo_run
  for stage in STAGES:
    assert (work / "stages" / f"{stage}.done").exists(), stage
  for run in ("teacher", *RUNS):
    assert (work / "models" / run / "config.json").exists(), run
    losses = _rows(work / "runs" / run / "metrics.jsonl")
    assert any("loss" in row for row in losses), run
  kd = _rows(work / "runs" / "kd" / "metrics.jsonl")
  fusion = _rows(work / "runs" / "fusion" / "metrics.jsonl")
  assert any("kd" in row for row in kd) and any("fusion" in row for row in fusion)
  for run in ("kd_offline", "kd_chat"):
    assert any("kd" in row for row in _rows(work / "runs" / run / "metrics.jsonl")), run
  assert (work / "teacher_top10").is_dir() and (work / "pairs_ref").is_dir()
  # curation: the served teacher answered, the rule judge graded, the store has its log-probs
  stages = json.loads((work / "curated" / "manifest.json").read_text())["stages"]
  assert [s["name"] for s in stages] == ["dedup", "refine", "judge"]
  assert stages[-1]["out"] > 0
  chat_store = json.loads((work / "teacher_chat_top10" / "manifest.json").read_text())
  assert chat_store["partial_positions"] is True
  assert "max |logits difference|" in out


def test_table_has_every_row_as_json_markdown_and_png(demo_run):
  work, out, _ = demo_run
  with open(work / "results.json") as f:
    table = json.load(f)["table"]
  names = [row["name"] for row in table]
  assert names[0] == "teacher" and names[-1] == "after SFT + KD + DPO" and len(names) == 9
  for row in table:
    acc, lo, hi = row["scores"]["accuracy"]
    assert 0.0 <= lo <= acc <= hi <= 1.0
    assert row["scores"]["num_prompts"] == 12
  assert "not run" not in out  # every stage of the method ran
  md = (work / "results.md").read_text()
  assert all(name in md for name in names)
  assert (work / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "after SFT + KD + fusion" in out


def test_rerun_skips_finished_stages_and_a_failure_is_loud(demo_run):
  work, _, env = demo_run
  proc = subprocess.run(
      [sys.executable, "tools/demo_method.py", "--workdir", str(work), "--size", "test"],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.count("skipped") == len(STAGES)
  os.remove(work / "stages" / "kd.done")
  os.remove(work / "models" / "teacher" / "config.json")  # the teacher KD needs is gone
  proc = subprocess.run(
      [sys.executable, "tools/demo_method.py", "--workdir", str(work), "--size", "test"],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      check=False,
  )
  assert proc.returncode != 0
  assert "stage 'kd' failed" in proc.stderr
