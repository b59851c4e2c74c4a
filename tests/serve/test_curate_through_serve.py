"""The curation pipeline talks to our own OpenAI-compatible server over real loopback HTTP:
every request is answered, journaled, and not sent again on a rerun."""

import asyncio
import io
import json
import os

from distil_jax.curate.config import from_config_dict
from distil_jax.curate.config_file import apply_overrides, load_config_dict
from distil_jax.curate.pipeline import RunPlan, run_pipeline
from distil_jax.curate.shards import read_shard

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "curate", "local_serve.py")
SEEDS = os.path.join(ROOT, "tools", "demo_data", "seeds.jsonl")
AGENT_STAGES = ("classify", "rewrite", "refine")


def _curate(server, out_dir):
  config = from_config_dict(
      apply_overrides(
          load_config_dict(CONFIG),
          [
              f"--config.endpoints.teacher.base_url={server.url}",
              "--config.endpoints.teacher.model=tiny",
          ],
      )
  )
  plan = RunPlan(config=config, config_path=CONFIG, input_path=SEEDS, output_dir=str(out_dir))
  before = server.stats.rows
  manifest = asyncio.run(run_pipeline(plan, progress_stream=io.StringIO()))
  return manifest, server.stats.rows - before


def test_curation_runs_against_distil_jax_serve_and_resumes_for_free(server, tmp_path):
  seeds = [json.loads(line) for line in open(SEEDS)]
  manifest, served = _curate(server, tmp_path / "run")
  assert served == len(AGENT_STAGES) * len(seeds)  # one request per record per agent stage
  assert manifest["endpoints"]["teacher"]["completion_tokens"] > 0
  shard_paths = [os.path.join(tmp_path / "run", s) for s in manifest["shards"]]
  records = [r for p in shard_paths for r in read_shard(p)]
  assert sorted(r["id"] for r in records) == sorted(s["id"] for s in seeds)
  # A random-init teacher's answers never parse: each is counted, and the record kept as it was.
  for stage in manifest["stages"]:
    if stage["name"] in AGENT_STAGES:
      assert sum(stage["kept_unchanged"].values()) == len(seeds), stage
  by_id = {s["id"]: s for s in seeds}
  for r in records:
    assert r["messages"][-2:] == [
        {"role": "user", "content": by_id[r["id"]]["instruction"]},
        {"role": "assistant", "content": by_id[r["id"]]["output"]},
    ]

  first = [open(p, "rb").read() for p in shard_paths]
  manifest2, served_again = _curate(server, tmp_path / "run")
  assert served_again == 0  # every answer comes from the journal
  assert [open(p, "rb").read() for p in shard_paths] == first
