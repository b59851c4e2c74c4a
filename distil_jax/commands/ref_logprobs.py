"""`distil-jax ref-logprobs --model REF --pairs DIR --output DIR`: the reference model's summed
response log-probs for the chosen and rejected side of every tokenized pair, computed once so DPO
training keeps one model in memory. Rerun to resume; with several processes pass the same
--coordinator flags as `train`. See `distil_jax/pairs/reference.py` for the output layout."""

from __future__ import annotations

import argparse
import sys

from distil_jax.commands.model_io import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--model",
      required=True,
      metavar="REF",
      help="the reference: HF directory, orbax checkpoint or training run",
  )
  parser.add_argument("--pairs", required=True, metavar="DIR", help="written by prepare-pairs")
  parser.add_argument("--output", required=True, metavar="DIR")
  parser.add_argument("--batch_size", type=int, default=8, help="pairs per step (2x rows)")
  parser.add_argument("--chunk", type=int, default=256, help="sequence positions per logits chunk")
  parser.add_argument(
      "--loss_positions",
      type=int,
      default=0,
      help="as the DPO run's config.loss_positions (0 every position, -1 the pairs' bound): "
      "the same setting gives the sums the train step computes",
  )
  parser.add_argument("--coordinator", default=None, metavar="HOST:PORT")
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
  from distil_jax.commands.train import maybe_initialize_distributed

  maybe_initialize_distributed(args)
  from distil_jax.multihost import fail_fast

  with fail_fast("distil-jax ref-logprobs"):
    return _run(args)


def _run(args) -> int:
  import math

  import jax

  from distil_jax.commands.model_io import parse_mesh
  from distil_jax.loading import open_model
  from distil_jax.model.config import parse_dtype
  from distil_jax.pairs.reference import compute_reference_logprobs
  from distil_jax.sharding import make_mesh

  mesh_cfg = parse_mesh(args.mesh)
  sizes = (mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor)
  mesh = make_mesh(
      mesh_cfg, devices=jax.devices() if -1 in sizes else jax.devices()[: math.prod(sizes)]
  )
  model = open_model(args.model, mesh=mesh, dtype=parse_dtype(args.dtype) if args.dtype else None)
  try:
    manifest = compute_reference_logprobs(
        model,
        mesh,
        args.pairs,
        args.output,
        model_name=args.model,
        batch_size=args.batch_size,
        chunk=args.chunk,
        loss_positions=args.loss_positions,
        log=lambda line: print(line, file=sys.stderr),
    )
  except (ValueError, FileNotFoundError) as e:
    print(f"distil-jax ref-logprobs: error: {e}", file=sys.stderr)
    return 2
  if jax.process_index() == 0:
    print(f"wrote reference log-probs of {manifest['pairs']} pairs to {args.output}")
  return 0
