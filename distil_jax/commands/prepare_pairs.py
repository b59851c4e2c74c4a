"""`distil-jax prepare-pairs --input PAIRS --output DIR`: preference pairs -> tokenized pair shards
(prompt + chosen and prompt + rejected through the chat template, loss mask on the response only).
See `distil_jax/pairs/tokenize.py` for the record layout and the truncation policy."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--input",
      nargs="+",
      required=True,
      metavar="PATH",
      help="pair files or directories (pairs-*.jsonl from make-pairs or curation)",
  )
  parser.add_argument("--output", required=True, metavar="DIR", help="written atomically")
  parser.add_argument(
      "--tokenizer", default=None, metavar="HF_DIR", help="default: the offline Qwen2.5 tokenizer"
  )
  parser.add_argument(
      "--max_length",
      type=int,
      default=2048,
      help="longest sequence (prompt + one answer) in tokens",
  )
  parser.add_argument("--overlong", choices=("truncate", "drop"), default="truncate")
  parser.add_argument("--shard_size", type=int, default=10_000, help="pairs per shard")


def run(args: argparse.Namespace) -> int:
  from distil_jax.pairs.format import PairError
  from distil_jax.pairs.tokenize import prepare_pairs

  try:
    manifest = prepare_pairs(
        args.input,
        args.output,
        tokenizer=args.tokenizer,
        max_length=args.max_length,
        overlong=args.overlong,
        shard_size=args.shard_size,
    )
  except (PairError, ValueError, FileNotFoundError) as e:
    print(f"distil-jax prepare-pairs: error: {e}", file=sys.stderr)
    return 2
  print(
      f"wrote {manifest['counts']['pairs']} tokenized pairs in {len(manifest['shards'])} "
      f"shard(s) to {args.output}: {manifest['counts']}"
  )
  return 0
