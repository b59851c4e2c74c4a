"""Curation through a local `distil-jax serve` teacher: the stages whose parsers keep a record
when a (small or untrained) teacher's answer cannot be parsed, so the run always yields data.

Run (what `make demo` does, with the server on port P):
  distil-jax serve --model TEACHER_HF_DIR --port P &
  distil-jax curate --config configs/curate/local_serve.py --workdir /tmp/curated \
      --input tools/demo_data/seeds.jsonl --config.endpoints.teacher.base_url=http://127.0.0.1:P/v1

Expected: /tmp/curated/curated-00000-of-00001.array_record with one record per distinct seed
(lineage lists classify, rewrite, refine), and a manifest whose per-stage counts show how many
teacher answers were accepted; a random-init teacher's answers are all rejected and counted.
Swap the base_url for a real teacher (vLLM, SGLang, DashScope) to get refined data.
"""

import importlib.util
import os

import ml_collections


def _sibling(name):
  """Config files are loaded by path, not as a package: import the neighbouring file."""
  spec = importlib.util.spec_from_file_location(
      f"_curate_{name}", os.path.join(os.path.dirname(__file__), f"{name}.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


demo = _sibling("demo")


def get_config(arg=None):
  config = demo.get_config(arg)
  config.num_output_shards = 1
  config.endpoints.teacher = demo.endpoint("http://127.0.0.1:8000/v1", "teacher", max_in_flight=16)
  config.stages = ("dedup", "classify", "rewrite", "refine", "dedup")
  config.classify = demo.agent(max_tokens=16, on_reject="keep")
  config.rewrite = demo.agent(max_tokens=48, on_reject="keep")
  config.refine = ml_collections.ConfigDict(
      dict(agent=demo.agent(max_tokens=48, on_reject="keep"), cot_tasks=("math", "reasoning"))
  )
  return config
