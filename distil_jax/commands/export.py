"""`distil-jax export --checkpoint DIR --output DIR`: an orbax or HF checkpoint -> a HF directory."""

from __future__ import annotations

import time

from distil_jax.commands import model_io


def add_arguments(parser):
  parser.add_argument(
      "--checkpoint",
      required=True,
      help="orbax model checkpoint, training workdir, or HF directory",
  )
  parser.add_argument("--output", required=True, help="HF directory to write")
  parser.add_argument(
      "--tokenizer",
      default=None,
      help="HF directory whose tokenizer to ship (default: the Qwen2.5 tokenizer)",
  )
  parser.add_argument("--max_shard_gb", type=float, default=5.0)
  model_io.add_model_arguments(parser)
  parser.add_argument("--overwrite", action="store_true")


def run(args) -> int:
  from distil_jax.commands.errors import one_line  # noqa: PLC0415

  return one_line("export", lambda: _run(args))


def _run(args) -> int:
  from distil_jax.hf import save_pretrained  # noqa: PLC0415

  start = time.time()
  model = model_io.load(args.checkpoint, args)
  tokenizer = None
  if args.tokenizer:
    from distil_jax.tokenizer import load_tokenizer  # noqa: PLC0415

    tokenizer = load_tokenizer(args.tokenizer)
  save_pretrained(
      model,
      args.output,
      tokenizer,
      max_shard_bytes=int(args.max_shard_gb * 1e9),
      overwrite=args.overwrite,
  )
  print(f"exported {args.checkpoint} -> {args.output} ({time.time() - start:.1f}s)")
  return 0
