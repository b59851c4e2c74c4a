"""`make demo`: the distillation pipeline end to end on tiny random Qwen2.5-architecture models.

Every step runs the real command line, the way a user would:
  1. build a teacher and a student as HF checkpoints (random init, real Qwen2.5 tokenizer)
  2. distil-jax convert   student HF -> orbax
  3. distil-jax generate  chat prompts -> completions with the real tokenizer
  4. distil-jax serve     the teacher behind an OpenAI-compatible API on loopback
  5. distil-jax curate    seed instructions through the teacher agents -> ArrayRecord shards
  6. distil-jax prepare   curated shards -> tokenized, loss-masked shards
  7. distil-jax train     SFT of the student on them (tiny config, CPU is fine)
  8. distil-jax export    the trained student -> HF; transformers reloads it, logits must match

Random weights produce gibberish text: the demo proves the plumbing, not the quality.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tools", "demo_data")
CLI = [sys.executable, "-m", "distil_jax.cli"]
TEACHER = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
)
STUDENT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def step(title: str) -> None:
  print(f"\n=== {title}", flush=True)


def cli(*args: str) -> None:
  print("$ distil-jax " + " ".join(args), flush=True)
  subprocess.run(CLI + list(args), check=True, cwd=ROOT)


def make_checkpoints(work: str) -> tuple[str, str]:
  from distil_jax.testing.hf_models import make_hf_checkpoint  # noqa: PLC0415
  from distil_jax.tokenizer import load_tokenizer  # noqa: PLC0415

  tokenizer = load_tokenizer()
  paths = []
  for name, shape, seed in (("teacher", TEACHER, 1), ("student", STUDENT, 2)):
    path = os.path.join(work, f"{name}_hf")
    make_hf_checkpoint(
        path,
        seed=seed,
        vocab_size=151936,
        tie_word_embeddings=True,
        randomize_norms_and_biases=False,
        bos_token_id=151643,
        eos_token_id=151645,
        **shape,
    )
    tokenizer.save_pretrained(path)
    paths.append(path)
    print(
        f"{name}: {path} ({shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, "
        "Qwen2.5 vocabulary and chat template)"
    )
  return paths[0], paths[1]


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/distil-jax-demo")
  parser.add_argument("--train_steps", type=int, default=30)
  args = parser.parse_args()
  work = os.path.abspath(args.workdir)
  shutil.rmtree(work, ignore_errors=True)
  os.makedirs(work)
  started = time.time()

  step("1. teacher and student checkpoints in HF format")
  teacher_hf, student_hf = make_checkpoints(work)

  step("2. convert the student to an orbax checkpoint")
  cli("convert", "--hf", student_hf, "--output", f"{work}/student_orbax")

  step("3. generate from chat prompts with the real tokenizer")
  cli(
      "generate",
      "--model",
      student_hf,
      "--input",
      f"{DATA}/prompts.jsonl",
      "--output",
      f"{work}/completions.jsonl",
      "--max_new_tokens",
      "16",
  )
  for line in open(f"{work}/completions.jsonl"):
    print("  ", json.dumps(json.loads(line), ensure_ascii=False)[:200])

  step("4-5. serve the teacher and curate seed instructions through it")
  from distil_jax.demo.served import served

  with served(CLI, teacher_hf, cwd=ROOT) as url:
    cli(
        "curate",
        "--config",
        "configs/curate/local_serve.py",
        "--workdir",
        f"{work}/curated",
        "--input",
        f"{DATA}/seeds.jsonl",
        f"--config.endpoints.teacher.base_url={url}",
    )
  manifest = json.load(open(f"{work}/curated/manifest.json"))
  print(
      "curation stages:",
      json.dumps([{k: s.get(k) for k in ("name", "in", "out")} for s in manifest["stages"]]),
  )

  step("6. tokenize the curated shards for SFT")
  cli(
      "prepare",
      "--input",
      *sorted(glob.glob(f"{work}/curated/*.array_record")),
      "--output",
      f"{work}/sft_data",
      "--tokenizer",
      student_hf,
      "--max_length",
      "256",
  )

  step("7. SFT of the student on the curated data")
  cli(
      "train",
      "--config",
      "configs/sft/tiny.py",
      "--workdir",
      f"{work}/sft",
      f"--config.data.path={work}/sft_data",
      "--config.init.kind=hf",
      f"--config.init.path={student_hf}",
      f"--config.steps={args.train_steps}",
      "--config.log_every=5",
      "--config.checkpoint.every_steps=15",
      "--no_progress",
  )
  losses = [
      json.loads(line)["loss"]
      for line in open(f"{work}/sft/metrics.jsonl")
      if "loss" in json.loads(line)
  ]
  print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} logged steps")

  step("8. export the trained student to HF and reload it in transformers")
  cli(
      "export",
      "--checkpoint",
      f"{work}/sft",
      "--output",
      f"{work}/student_sft_hf",
      "--tokenizer",
      student_hf,
  )
  from distil_jax.demo.parity import logits_difference

  diff = logits_difference(f"{work}/student_sft_hf", "Hello world")
  print(f"max |logits(distil-jax) - logits(transformers)| = {diff:.2e} (float32)")
  if diff > 1e-4:
    print("FAILED: exported checkpoint does not reproduce distil-jax's logits", file=sys.stderr)
    return 1
  print(f"\ndemo finished in {time.time() - started:.0f} s; everything is under {work}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
