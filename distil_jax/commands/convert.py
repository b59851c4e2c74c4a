"""`distil-jax convert --hf DIR --output DIR`: a HF Qwen2 checkpoint -> an orbax model checkpoint."""

from __future__ import annotations

import time

from distil_jax.commands import model_io


def add_arguments(parser):
  parser.add_argument(
      "--hf", required=True, help="HF checkpoint directory (config.json + safetensors)"
  )
  parser.add_argument("--output", required=True, help="orbax model checkpoint directory to write")
  model_io.add_model_arguments(parser)
  parser.add_argument("--overwrite", action="store_true")


def run(args) -> int:
  from distil_jax.commands.errors import one_line  # noqa: PLC0415

  return one_line("convert", lambda: _run(args))


def _run(args) -> int:
  from distil_jax import checkpoints  # noqa: PLC0415

  start = time.time()
  model = model_io.load(args.hf, args)
  checkpoints.save_model(model, args.output, overwrite=args.overwrite)
  print(
      f"converted {args.hf} -> {args.output} ({model.cfg.num_params() / 1e6:.1f}M params, "
      f"{time.time() - start:.1f}s)"
  )
  return 0
