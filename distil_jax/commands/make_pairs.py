"""`distil-jax make-pairs --student CKPT --input FILES --output DIR`: preference pairs whose chosen
answer is the teacher's (curated) one and whose rejected answer is the student's own generation.

Greedy by default (`--temperature 0`); `--temperature/--top_k/--top_p/--seed` sample instead, each
pair with its own seed (recorded in its provenance). Rerun the same command to resume.
See `distil_jax/pairs/build.py` for the drop rules and the output layout.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--student",
      required=True,
      metavar="CKPT",
      help="the current student: HF directory or distil-jax orbax checkpoint",
  )
  parser.add_argument(
      "--input",
      nargs="+",
      required=True,
      metavar="FILE",
      help="curated *.array_record shards or chat *.jsonl (teacher answers)",
  )
  parser.add_argument("--output", required=True, metavar="DIR", help="pair shards + manifest.json")
  parser.add_argument(
      "--tokenizer",
      default=None,
      metavar="HF_DIR",
      help="default: the student's own, else the offline Qwen2.5 tokenizer",
  )
  parser.add_argument("--max_new_tokens", type=int, default=1024)
  parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
  parser.add_argument("--top_k", type=int, default=0, help="0 = off")
  parser.add_argument("--top_p", type=float, default=1.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--batch_size", type=int, default=32, help="prompts generated at once")
  parser.add_argument("--shard_size", type=int, default=1000, help="prompts per output shard")
  parser.add_argument(
      "--near_duplicate",
      type=float,
      default=0.9,
      help="drop a pair when its answers' character 5-gram Jaccard reaches this",
  )
  parser.add_argument(
      "--min_margin",
      type=float,
      default=None,
      help="keep only pairs whose judge margin (teacher - student score) reaches this",
  )
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)


def make_answer(generator, tokenizer, *, sampling, max_new_tokens: int, batch_size: int):
  """The student's answer to each prompt through the generation engine; None when the prompt and
  `max_new_tokens` exceed the model's positions."""
  from distil_jax.generate import decode, encode_chat

  limit = generator.config.max_position_embeddings

  def answer(prompts, seeds):
    ids = [encode_chat(tokenizer, messages) for messages in prompts]
    fits = [i for i, p in enumerate(ids) if len(p) + max_new_tokens <= limit]
    fits.sort(key=lambda i: len(ids[i]))  # similar lengths share a batch: less padding
    results: list = [None] * len(prompts)
    for b in range(0, len(fits), batch_size):
      rows = fits[b : b + batch_size]
      completions = generator.generate(
          [ids[i] for i in rows],
          max_new_tokens=max_new_tokens,
          sampling=sampling,
          seed=[seeds[i] for i in rows],
      )
      for i, c in zip(rows, completions):
        results[i] = (decode(tokenizer, c.tokens), c.finish_reason, len(c.tokens))
    return results

  return answer


def run(args: argparse.Namespace) -> int:
  from distil_jax.generate import Generator, Sampling, stop_ids_for
  from distil_jax.generate.loading import load_model, load_tokenizer_for
  from distil_jax.model.config import parse_dtype
  from distil_jax.pairs.build import build_pairs
  from distil_jax.tokenizer import load_tokenizer

  try:
    sampling = Sampling(args.temperature, args.top_k, args.top_p)
  except ValueError as e:
    print(f"distil-jax make-pairs: error: {e}", file=sys.stderr)
    return 2
  tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else load_tokenizer_for(args.student)
  model = load_model(args.student, dtype=parse_dtype(args.dtype) if args.dtype else None)
  generator = Generator(model, stop_ids=stop_ids_for(tokenizer))
  settings = {
      "student": args.student,
      "seed": args.seed,
      "sampling": {
          "temperature": args.temperature,
          "top_k": args.top_k,
          "top_p": args.top_p,
          "max_new_tokens": args.max_new_tokens,
      },
  }
  answer = make_answer(
      generator,
      tokenizer,
      sampling=sampling,
      max_new_tokens=args.max_new_tokens,
      batch_size=args.batch_size,
  )
  try:
    manifest = build_pairs(
        args.input,
        args.output,
        answer=answer,
        settings=settings,
        shard_size=args.shard_size,
        near_duplicate=args.near_duplicate,
        min_margin=args.min_margin,
        log=lambda line: print(line, file=sys.stderr),
    )
  except (ValueError, FileNotFoundError) as e:
    print(f"distil-jax make-pairs: error: {e}", file=sys.stderr)
    return 2
  totals = manifest["totals"]
  print(
      f"wrote {totals['pairs']} pairs from {totals['prompts']} prompts to {args.output}; "
      f"dropped {totals['dropped']}, unreadable {manifest['read']}; the student's answers "
      f"average {totals['student_mean_tokens']} tokens"
  )
  return 0
