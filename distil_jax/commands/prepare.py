"""`distil-jax prepare`: chat JSONL / curated ArrayRecord shards -> tokenized ArrayRecord shards."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--input",
      nargs="+",
      required=True,
      metavar="FILE",
      help="*.jsonl (OpenAI messages, ShareGPT, Alpaca) or curated *.array_record",
  )
  parser.add_argument(
      "--output",
      required=True,
      metavar="DIR",
      help="directory for the shards and manifest.json (written atomically)",
  )
  parser.add_argument(
      "--tokenizer",
      default=None,
      metavar="HF_DIR",
      help="HF directory with tokenizer.json (default: the offline Qwen2.5 tokenizer)",
  )
  parser.add_argument(
      "--max_length",
      type=int,
      default=2048,
      help="longest example in tokens, chat template included (default 2048)",
  )
  parser.add_argument(
      "--overlong",
      choices=("truncate", "drop"),
      default="truncate",
      help="over-long examples: keep the first max_length tokens, or drop them",
  )
  parser.add_argument(
      "--strict",
      action="store_true",
      help="stop at the first bad record (naming file and line) instead of skipping",
  )
  parser.add_argument(
      "--require_teacher_logprobs",
      action="store_true",
      help="keep only curated records whose teacher_logprobs re-tokenise to their content "
      "(for `distil-jax chat-logits`); the others are skipped and counted",
  )
  parser.add_argument("--shard_size", type=int, default=10_000, help="examples per shard")
  parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")


def run(args: argparse.Namespace) -> int:
  from distil_jax.data.prepare import PrepareError, prepare_dataset

  try:
    manifest = prepare_dataset(
        args.input,
        args.output,
        tokenizer=args.tokenizer,
        max_length=args.max_length,
        overlong=args.overlong,
        strict=args.strict,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
        require_teacher_logprobs=args.require_teacher_logprobs,
    )
  except PrepareError as e:
    print(f"distil-jax prepare: error: {e}", file=sys.stderr)
    return 2
  counts, tokens = manifest["counts"], manifest["tokens"]
  print(
      f"wrote {counts['examples']} examples ({tokens['total']} tokens, "
      f"{tokens['assistant_targets']} trained) in {len(manifest['shards'])} shard(s) "
      f"to {args.output}; skipped {counts['skipped']}, truncated {counts['truncated']}"
  )
  for reason, entry in manifest["skipped"].items():
    print(f"  skipped {entry['count']:>6} {reason}: first at {', '.join(entry['first'])}")
  if manifest["skipped"]:
    print(f"  details in {args.output}/manifest.json")
  return 0
