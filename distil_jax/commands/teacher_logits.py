"""`distil-jax teacher-logits`: a teacher's top-k at every trained position of prepared shards.

  distil-jax teacher-logits --teacher DIR --data DATA_DIR --output STORE_DIR --top_k 10 \
      [--batch_size 8] [--max_length L] [--dtype bfloat16] [--mesh fsdp=8]

The teacher reads the exact token sequences the student trains on (the prepared records, in
record order) and the store keeps, for the loss-masked positions only, the top-k ids and
log-probs and the log of the mass outside them (format: `distil_jax/data/teacher_store.py`).

Batching: documents are packed in record order into rows of `max_length` tokens (next fit,
`segment_ids` keep documents apart, positions restart per document), `batch_size` rows a step.
One row shape means one compiled program, and packed rows spend little compute on padding;
a document's distributions equal those of the document run alone (segment masking). Only the
trained positions are unembedded: they are gathered per row into a bucketed number of slots
(a power-of-two number of `chunk`s), so prompts cost the forward pass only.

Work is split into units of `--unit_size` consecutive records; process i of n takes units
i, i + n, ... and writes their files. A rerun skips finished units and redoes a unit a killed
run left unfinished; `manifest.json` is written last, by process 0, once every unit is done.
Prints a JSON summary (teacher tokens/s, bytes per stored token) at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from distil_jax.train.teacher_runner import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--teacher",
      required=True,
      metavar="DIR",
      help="the teacher: a HF directory, an orbax model checkpoint or a run",
  )
  parser.add_argument(
      "--data",
      required=True,
      metavar="DATA_DIR",
      help="a directory written by `distil-jax prepare`",
  )
  parser.add_argument("--output", required=True, metavar="STORE_DIR")
  parser.add_argument("--top_k", type=int, default=10)
  parser.add_argument(
      "--batch_size", type=int, default=8, help="packed rows per step (per process)"
  )
  parser.add_argument(
      "--max_length",
      type=int,
      default=None,
      help="row length in tokens; longer documents are cut (default: the data's)",
  )
  parser.add_argument(
      "--dtype",
      default=None,
      choices=["float32", "bfloat16"],
      help="teacher parameter/compute dtype (default: the checkpoint's)",
  )
  parser.add_argument(
      "--mesh",
      default="data=1",
      help="mesh shape, e.g. 'fsdp=8' or 'data=2,tensor=4' (-1 fills the rest)",
  )
  parser.add_argument(
      "--vocab_columns",
      type=int,
      default=None,
      help="vocabulary columns the log-softmax runs over (default: the data "
      "tokenizer's size, the tokens teacher and student share)",
  )
  parser.add_argument(
      "--logprob_dtype",
      default="float16",
      choices=["float16", "float32"],
      help="stored top-k log-prob dtype (the tail is always float32)",
  )
  parser.add_argument(
      "--tokenizer",
      default=None,
      metavar="HF_DIR",
      help="the teacher's tokenizer, when --teacher holds no tokenizer.json",
  )
  parser.add_argument("--unit_size", type=int, default=1024, help="records per work unit")
  parser.add_argument(
      "--chunk",
      type=int,
      default=128,
      help="positions per row unembedded at once ([batch, chunk, V] float32)",
  )
  parser.add_argument(
      "--coordinator",
      default=None,
      metavar="HOST:PORT",
      help="multi-process: the jax.distributed coordinator, or 'auto'",
  )
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  # Tests: SIGKILL this process halfway through the unit after N finished ones.
  parser.add_argument("--kill_after_units", type=int, default=None, help=argparse.SUPPRESS)


def _fail(message: str) -> int:
  print(f"distil-jax teacher-logits: {message}", file=sys.stderr)
  return 2


def run(args: argparse.Namespace) -> int:
  from distil_jax.data import shards, teacher_store

  for name in ("top_k", "batch_size", "unit_size", "chunk"):
    if getattr(args, name) < 1:
      return _fail(f"--{name} must be >= 1, got {getattr(args, name)}")
  try:
    data_manifest = shards.read_manifest(args.data)
    settings = _settings(args, data_manifest)
  except (FileNotFoundError, ValueError) as e:
    return _fail(str(e))
  from distil_jax.commands.train import maybe_initialize_distributed

  maybe_initialize_distributed(args)
  from distil_jax.multihost import fail_fast

  with fail_fast("distil-jax teacher-logits"):
    from distil_jax.hf.safetensors_io import CheckpointError

    try:
      return _run(args, data_manifest, settings)
    except (teacher_store.StoreError, CheckpointError, UsageError) as e:
      return _fail(str(e))


def _settings(args, data_manifest: dict) -> dict:
  """What the store depends on; a resumed run must match it. Refuses a foreign tokenizer."""
  from distil_jax.data import shards
  from distil_jax.tokenizer import load_tokenizer, tokenizer_fingerprint

  teacher = Path(args.teacher)
  if not teacher.exists():
    raise FileNotFoundError(f"--teacher {teacher}: no such directory")
  tok_dir = Path(args.tokenizer) if args.tokenizer else teacher
  if not (tok_dir / "tokenizer.json").is_file():
    raise FileNotFoundError(
        f"{tok_dir}: no tokenizer.json; pass --tokenizer with the teacher's " "tokenizer directory"
    )
  data_tok = data_manifest["tokenizer"]
  fingerprint = tokenizer_fingerprint(load_tokenizer(tok_dir))
  if fingerprint != data_tok["fingerprint"]:
    raise ValueError(
        f"the teacher's tokenizer ({tok_dir / 'tokenizer.json'}, fingerprint "
        f"{fingerprint[:16]}) is not the data's ({args.data}, tokenizer "
        f"{data_tok['id']}, fingerprint {data_tok['fingerprint'][:16]})"
    )
  vocab_columns = args.vocab_columns or int(data_tok["vocab_size"])
  if not 0 < args.top_k < vocab_columns:
    raise ValueError(f"--top_k {args.top_k} must be in [1, {vocab_columns}) (the vocab columns)")
  max_length = args.max_length or int(data_manifest["max_length"])
  if max_length < 2:
    raise ValueError(f"--max_length must be >= 2, got {max_length}")
  config_path = teacher / "config.json"
  config = json.loads(config_path.read_text()) if config_path.is_file() else {}
  if config.get("vocab_size", vocab_columns) < vocab_columns:
    raise ValueError(
        f"{config_path}: the teacher has {config['vocab_size']} vocabulary rows, "
        f"fewer than the {vocab_columns} vocab columns"
    )
  manifest_bytes = (Path(args.data) / shards.MANIFEST).read_bytes()
  return {
      "top_k": args.top_k,
      "logprob_dtype": args.logprob_dtype,
      "tail_dtype": "float32",
      "vocab_columns": vocab_columns,
      "max_length": max_length,
      "unit_size": args.unit_size,
      "teacher": {
          "path": str(teacher.resolve()),
          "dtype": args.dtype,
          "config": {
              k: config[k]
              for k in (
                  "model_type",
                  "vocab_size",
                  "hidden_size",
                  "num_hidden_layers",
                  "num_attention_heads",
                  "num_key_value_heads",
                  "torch_dtype",
              )
              if k in config
          },
      },
      "tokenizer": {"fingerprint": fingerprint, "data_id": data_tok["id"]},
      "data": {
          "path": str(Path(args.data).resolve()),
          "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
          "examples": int(data_manifest["counts"]["examples"]),
      },
  }


def open_teacher(path: str, mesh, dtype):
  """The one place the teacher is opened: a HF directory, a model checkpoint or a run."""
  from distil_jax.loading import open_model

  return open_model(path, mesh=mesh, dtype=dtype)


def _run(args, data_manifest: dict, settings: dict) -> int:
  import jax
  import grain
  from distil_jax.data import teacher_store
  from distil_jax.sharding import sync_processes

  store_dir = Path(args.output)
  me, nproc = jax.process_index(), jax.process_count()
  if me == 0:
    teacher_store.begin_store(store_dir, settings)
  sync_processes("teacher-logits-begin")
  if me != 0:
    teacher_store.begin_store(store_dir, settings)  # checks what process 0 wrote
  units = teacher_store.unit_ranges(settings["data"]["examples"], args.unit_size)
  mine = [u for u in range(me, len(units), nproc) if not teacher_store.unit_done(store_dir, u)]
  runner = None
  if _total(len(mine)):  # a rerun of a finished store only writes the manifest
    from distil_jax.train.teacher_runner import TeacherRunner

    runner = TeacherRunner(_open_on_mesh(args, settings), args.batch_size, args.chunk, settings)
  source = grain.sources.ArrayRecordDataSource(
      [str(Path(args.data) / s["path"]) for s in data_manifest["shards"] if s["examples"]]
  )
  started = time.perf_counter()
  for done, u in enumerate(mine):
    start, end = units[u]
    writer = teacher_store.UnitWriter(store_dir, u, start, end)
    kill_at = (start + end) // 2 if args.kill_after_units == done else None
    for rec in runner.records(source, start, end):
      writer.write(rec)
      if rec.index == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    writer.finish()
  if runner is not None:
    runner.drain_peers()
  seconds = time.perf_counter() - started
  sync_processes("teacher-logits-units-done")
  tokens = _total(runner.tokens if runner else 0)
  summary = {
      "units_computed_per_process": _each(len(mine)),
      "teacher_tokens": tokens,
      "teacher_tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
      "teacher_tokens_per_s_after_first_step": runner.steady_rate() if runner else None,
      "seconds": round(seconds, 2),
  }
  if me == 0:
    manifest = teacher_store.finish_store(store_dir, len(units))
    summary.update(
        stored_positions=manifest["counts"]["stored_positions"],
        bytes_per_stored_token=manifest["bytes_per_stored_token"],
        payload_bytes_per_stored_token=manifest["payload_bytes_per_stored_token"],
        output=str(store_dir),
    )
    print(json.dumps(summary))
  sync_processes("teacher-logits-manifest")
  return 0


def _each(value: int) -> list[int]:
  """`value` of every process, in process order."""
  import jax

  if jax.process_count() == 1:
    return [value]
  from jax.experimental import multihost_utils

  return [int(v) for v in multihost_utils.process_allgather(np.array(value, np.int64))]


def _total(value: int) -> int:
  return sum(_each(value))


def _open_on_mesh(args, settings):
  from distil_jax.commands.model_io import mesh_from_arg
  from distil_jax.data.teacher_store import StoreError
  from distil_jax.model.config import parse_dtype

  mesh = mesh_from_arg(args.mesh)
  model = open_teacher(args.teacher, mesh, parse_dtype(args.dtype) if args.dtype else None)
  if model.cfg.vocab_size < settings["vocab_columns"]:
    raise StoreError(
        f"{args.teacher}: the teacher has {model.cfg.vocab_size} vocabulary rows, "
        f"fewer than the {settings['vocab_columns']} vocab columns asked for"
    )
  return model, mesh
