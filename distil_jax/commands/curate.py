"""`distil-jax curate`: seed JSONL -> curated chat shards through teacher agents over HTTP.

  distil-jax curate --config configs/curate/demo.py --workdir DIR [--input seeds.jsonl]
                    [--shard_index i --num_shards n] [--config.a.b=value ...]
  distil-jax curate --config configs/curate/demo.py --workdir DIR --merge --num_shards n

Never imports JAX: curation runs on machines without it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

ACCEPTS_OVERRIDES = True


def add_arguments(parser) -> None:
  parser.add_argument("--config", required=True, help="configs/curate/<name>.py[:arg]")
  parser.add_argument("--workdir", required=True, help="journal, shards and manifest go here")
  parser.add_argument("--input", default="", help="seed JSONL (default: the config's input_path)")
  parser.add_argument("--shard_index", type=int, default=0)
  parser.add_argument("--num_shards", type=int, default=1)
  parser.add_argument(
      "--merge", action="store_true", help="combine the parts of a --num_shards run"
  )


def _install_fast_event_loop() -> None:
  try:
    import uvloop  # optional: halves the client's CPU per request
  except ImportError:
    return
  asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(args) -> int:
  try:
    return _run(args)
  except (
      OSError,
      ValueError,
      KeyError,
      AttributeError,
  ) as e:  # bad config, seeds, journal, workdir
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f"distil-jax curate: error: {message}", file=sys.stderr)
    return 2


def failures_by_cause(manifest: dict) -> dict[str, int]:
  """Records each stage lost to failed requests, by cause, summed over stages."""
  counts: dict[str, int] = {}
  for stage in manifest["stages"]:
    for cause, n in {**stage["failed"], **stage["kept_unchanged"]}.items():
      counts[cause] = counts.get(cause, 0) + n
  return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _run(args) -> int:
  from distil_jax.curate import config as curate_config
  from distil_jax.curate import config_file

  config_dict = config_file.apply_overrides(
      config_file.load_config_dict(args.config), args.overrides
  )
  config = curate_config.from_config_dict(config_dict)
  if args.merge:
    from distil_jax.curate.merge import merge_parts

    result = merge_parts(args.workdir, args.num_shards, config.num_output_shards)
    print(
        f"merged {args.num_shards} parts: {result['records_out']} records -> {args.workdir}/merged",
        file=sys.stderr,
    )
    return 0 if result["records_out"] else 1
  from distil_jax.curate.pipeline import RunPlan, part_dir, run_pipeline

  input_path = args.input or config.input_path
  if not input_path:
    print("error: no seed JSONL: pass --input or set input_path in the config", file=sys.stderr)
    return 2
  plan = RunPlan(
      config=config,
      config_path=args.config,
      input_path=input_path,
      output_dir=part_dir(args.workdir, args.shard_index, args.num_shards),
      shard_index=args.shard_index,
      num_shards=args.num_shards,
  )
  _install_fast_event_loop()
  manifest = asyncio.run(run_pipeline(plan))
  summary = {s["name"]: s["out"] for s in manifest["stages"]}
  print(
      json.dumps(
          {
              "records_out": manifest["records_out"],
              "stages": summary,
              "output_dir": os.path.abspath(plan.output_dir),
          }
      ),
      file=sys.stderr,
  )
  failures = failures_by_cause(manifest)
  if failures:
    print(
        "failed requests by cause (records affected): "
        + ", ".join(f"{cause} {n}" for cause, n in failures.items()),
        file=sys.stderr,
    )
  if not manifest["complete"]:
    for name, error in manifest["endpoint_errors"].items():
      print(
          f"distil-jax curate: error: endpoint {name!r} stopped the run: {error}; no shards written",
          file=sys.stderr,
      )
    return 1
  if not manifest["records_out"]:
    print(
        f"distil-jax curate: error: no records survived the stages ({summary}); see "
        f"{os.path.join(plan.output_dir, 'manifest.json')}",
        file=sys.stderr,
    )
    return 1
  return 0
