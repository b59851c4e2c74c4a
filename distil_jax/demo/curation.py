"""The demo's curation stage: the trained teacher behind `distil-jax serve`, the world's rule
behind a judge endpoint, `distil-jax curate` between them, then `prepare` of what it kept.

    student answers  `distil-jax generate` of the student before training (greedy): the other
                     half of the Model-Fit-Difficulty score
    curate           dedup -> refine (the teacher answers each distillation prompt over HTTP,
                     with its top-10 chat log-probs) -> judge (rule judge: teacher score >=
                     min_score and teacher - student >= min_fit_difficulty)
    prepare          the curated shards -> the student's SFT data, keeping the records whose
                     log-probs re-tokenise to their answers (`--require_teacher_logprobs`)
    chat-logits      those log-probs -> an offline top-10 store (the gray-box KD source)
"""

from __future__ import annotations

import glob
import json

from distil_jax.demo import world


def curated_shards(demo) -> list[str]:
  return sorted(glob.glob(demo.path("curated", "curated-*.array_record")))


def judged_summary(demo) -> str:
  """How the judge graded the kept answers (what the method's threshold would keep)."""
  from distil_jax.curate.shards import read_shard

  scores = [
      r["lineage"]["scores"]
      for path in curated_shards(demo)
      for r in read_shard(path)
      if "judge_score" in r["lineage"].get("scores", {})
  ]
  right = sum(s["judge_score"] >= 5 for s in scores)
  formatted = sum(s["judge_score"] >= 9 for s in scores)
  fit = sum(s["fit_difficulty"] >= 1 for s in scores)
  return (
      f"judge: {len(scores)} teacher answers kept; the rule finds {right} right "
      f"({formatted} also formatted as asked); {fit} beat the untrained student's (MFD >= 1)"
  )


def run(demo, cli_prefix: list[str], root: str) -> None:
  from distil_jax.demo.rule_judge import RuleJudge
  from distil_jax.demo.served import served

  s = demo.size
  rows = world.read_jsonl(demo.path("world", "distil_rows.jsonl"))
  # The student's own answers before any training: what the MFD score subtracts.
  generated = demo.path("world", "student_init_answers.jsonl")
  demo.cli(
      "generate",
      "--model",
      demo.path("student_init_hf"),
      "--input",
      demo.path("world", "distil_prompts.jsonl"),
      "--output",
      generated,
      "--max_new_tokens",
      "16",
      "--batch_size",
      "64",
  )
  answers = demo.path("world", "student_answers.jsonl")
  world.write_jsonl(
      answers, [{"id": r["key"], "answer": r["completion"]} for r in world.read_jsonl(generated)]
  )
  seeds = demo.path("world", "seeds.jsonl")
  world.write_jsonl(seeds, [{"id": r["key"], "instruction": r["prompt"]} for r in rows])

  with served(cli_prefix, demo.path("models", "teacher"), cwd=root, env=demo.env()) as url:
    with RuleJudge(rows) as judge:
      print(f"  rule judge at {judge.base_url} (the world's rule in place of an LLM judge)")
      demo.cli(
          "curate",
          "--config",
          "configs/curate/demo_world.py",
          "--workdir",
          demo.path("curated"),
          "--input",
          seeds,
          f"--config.endpoints.teacher.base_url={url}",
          f"--config.endpoints.judge.base_url={judge.base_url}",
          f"--config.judge.student_answers_path={answers}",
          f"--config.refine.agent.temperature={s.answer_temperature}",
          f"--config.judge.min_score={s.judge_min_score}",
          f"--config.judge.min_fit_difficulty={s.judge_min_fit}",
          "--config.progress_interval_s=10",
      )
  manifest = json.load(open(demo.path("curated", "manifest.json")))
  for stage in manifest.get("stages", []):
    dropped = {**stage.get("filtered", {}), **stage.get("failed", {})}
    print(f"  {stage.get('name')}: {stage.get('in')} -> {stage.get('out')} {dropped or ''}")
  print("  " + judged_summary(demo))
  demo.cli(
      "prepare",
      "--input",
      *curated_shards(demo),
      "--output",
      demo.path("student_data"),
      "--max_length",
      str(s.seq_len),
      "--require_teacher_logprobs",
      "--overwrite",
  )
  demo.cli(
      "chat-logits",
      "--curated",
      demo.path("curated"),
      "--data",
      demo.path("student_data"),
      "--output",
      demo.path("teacher_chat_top10"),
  )
