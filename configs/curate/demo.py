"""Curation demo: every agent stage against a local OpenAI-compatible teacher (e.g. `distil-jax serve`).

Run:
  distil-jax curate --config configs/curate/demo.py --workdir /tmp/curate-demo \
      --input seeds.jsonl --config.endpoints.teacher.base_url=http://127.0.0.1:8000/v1

Expected: /tmp/curate-demo/curated-0000{0,1}-of-00002.array_record (chat records with lineage),
/tmp/curate-demo/manifest.json with per-stage counts, and a journal that makes a rerun free.
The arg picks the student-answer source: `demo.py:file=answers.jsonl` reads student answers from a
JSONL file (e.g. from `distil-jax generate`) instead of asking the `student` endpoint.
"""

import ml_collections

from distil_jax.curate.taxonomy import default_taxonomy


def endpoint(base_url: str, model: str, api_key_env: str = "", max_in_flight: int = 64):
  return ml_collections.ConfigDict(
      dict(
          base_url=base_url,
          model=model,
          api_key_env=api_key_env,
          max_in_flight=max_in_flight,
          requests_per_minute=0.0,
          tokens_per_minute=0.0,
          timeout_s=120.0,
          max_attempts=8,
          max_retry_s=600.0,
          backoff_base_s=1.0,
          backoff_max_s=60.0,
          breaker_failures=16,
          breaker_window_s=120.0,
      )
  )  # endpoint down: the run stops, exit 1


def agent(
    endpoint_name: str = "teacher",
    temperature: float = 0.0,
    max_tokens: int = 1024,
    on_reject: str = "drop",
    top_logprobs: int = 0,
):
  return ml_collections.ConfigDict(
      dict(
          endpoint=endpoint_name,
          temperature=temperature,
          top_p=1.0,
          max_tokens=max_tokens,
          on_reject=on_reject,
          # refine only: > 0 asks for the answer's top-k chat log-probs (docs/chatlp.md)
          top_logprobs=top_logprobs,
      )
  )


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.input_path = ""  # or --input
  config.num_output_shards = 2
  config.progress_interval_s = 2.0
  config.endpoints = ml_collections.ConfigDict(
      dict(
          teacher=endpoint("http://127.0.0.1:8000/v1", "teacher"),
          student=endpoint("http://127.0.0.1:8001/v1", "student"),
      )
  )
  config.taxonomy = ml_collections.ConfigDict(default_taxonomy())
  config.stages = (
      "dedup",
      "classify",
      "expand",
      "balance_language",
      "rewrite",
      "refine",
      "judge",
      "verify",
      "dedup",
      "resample_tasks",
      "sample_lengths",
  )
  config.classify = agent(max_tokens=32, on_reject="keep")
  config.expand = ml_collections.ConfigDict(
      dict(agent=agent(temperature=0.7, max_tokens=512), num_new=16, num_examples=3)
  )
  config.balance_language = ml_collections.ConfigDict(
      dict(
          agent=agent(temperature=0.7, max_tokens=512),
          languages=("en", "zh"),
          target_ratio=0.5,
          max_new=16,
          num_examples=3,
      )
  )
  config.rewrite = agent(max_tokens=512, on_reject="keep")
  config.refine = ml_collections.ConfigDict(
      dict(
          agent=agent(max_tokens=2048),
          cot_tasks=("math", "reasoning", "code_generation", "code_debugging"),
      )
  )
  student_file = arg[len("file=") :] if arg and arg.startswith("file=") else ""
  config.judge = ml_collections.ConfigDict(
      dict(
          agent=agent(max_tokens=128),
          min_score=5.0,
          min_fit_difficulty=1.0,
          student=agent("" if student_file else "student", max_tokens=1024),
          student_answers_path=student_file,
      )
  )
  config.verify = agent(max_tokens=128)
  config.dedup = ml_collections.ConfigDict(
      dict(near_threshold=0.8, shingle_chars=5, sketch_size=64)
  )
  config.resample_tasks = ml_collections.ConfigDict(dict(target_size=0))
  config.sample_lengths = ml_collections.ConfigDict(
      dict(keep_fraction=0.9, mean_chars=0.0, std_chars=0.0)
  )
  return config
