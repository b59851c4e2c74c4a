"""`distil-jax train --config configs/sft/x.py --workdir DIR [--config.a.b=value ...]`.

Runs again in the same workdir to resume from its latest checkpoint. Exit code 0 when the run
finished or was stopped by SIGTERM/SIGINT after saving; 1 when a loss went non-finite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

ACCEPTS_OVERRIDES = True  # --config.<key>=<value>, checked against the locked config


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--config",
      required=True,
      metavar="FILE[:ARG]",
      help="an ml-collections config file, e.g. configs/sft/tiny.py",
  )
  parser.add_argument(
      "--workdir",
      required=True,
      metavar="DIR",
      help="checkpoints, metrics.jsonl and TensorBoard events go here",
  )
  parser.add_argument(
      "--export",
      default=None,
      metavar="HF_DIR",
      help="after training, write the student as a Hugging Face directory",
  )
  parser.add_argument(
      "--tokenizer",
      default=None,
      metavar="HF_DIR",
      help="tokenizer files for --export (default: the offline Qwen2.5 one)",
  )
  parser.add_argument(
      "--coordinator",
      default=None,
      metavar="HOST:PORT",
      help="multi-process: the jax.distributed coordinator HOST:PORT, or "
      "'auto' on TPU pods and Slurm/Open MPI clusters (JAX finds its peers)",
  )
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--no_progress", action="store_true", help="no progress bar")


def maybe_initialize_distributed(args) -> None:
  import jax

  if args.coordinator == "auto":
    jax.distributed.initialize()
  elif args.coordinator:
    jax.distributed.initialize(
        args.coordinator, num_processes=args.num_processes, process_id=args.process_id
    )


def _write_atomically(path: str, text: str) -> None:
  with open(f"{path}.tmp", "w") as f:
    f.write(text)
  os.replace(f"{path}.tmp", path)


def _bind_to_data(cfg):
  """What the data decides: the vocabulary columns a teacher and the student share (the
  tokenizer's real tokens), and a refusal of a teacher whose tokenizer is not the data's."""
  import dataclasses
  from distil_jax.data import read_manifest

  tokenizer = read_manifest(cfg.data.path).get("tokenizer") or {}
  for name, frozen in cfg.frozen.items():
    _check_tokenizer(name, frozen.path, cfg.data.path, tokenizer)
  if getattr(cfg.loss, "vocab_columns", None) == 0 and tokenizer.get("vocab_size"):
    cfg = dataclasses.replace(
        cfg, loss=dataclasses.replace(cfg.loss, vocab_columns=int(tokenizer["vocab_size"]))
    )
  return cfg


def _bind_positions(cfg):
  """`loss_positions=-1`: the bound the data's manifest gives (`positions.from_manifest`)."""
  import dataclasses
  from distil_jax.train import positions

  if cfg.loss_positions >= 0:
    return cfg
  path = os.path.join(cfg.data.path, "manifest.json")
  with open(path) as f:
    manifest = json.load(f)
  k = positions.from_manifest(
      manifest, cfg.data.seq_len, cfg.model.max_segments_per_row or None, path
  )
  print(
      f"distil-jax train: loss_positions=-1 -> {k or 'every position'} (the bound from {path})",
      file=sys.stderr,
  )
  return dataclasses.replace(cfg, loss_positions=k)  # the loop builds the loss from it


def _check_tokenizer(name: str, model_path: str, data_path: str, data_tokenizer: dict) -> None:
  if not model_path or not os.path.isfile(os.path.join(model_path, "tokenizer.json")):
    return  # a converted checkpoint or a run carries no tokenizer of its own
  from distil_jax.tokenizer import load_tokenizer, tokenizer_fingerprint

  theirs = tokenizer_fingerprint(load_tokenizer(model_path))
  ours = data_tokenizer.get("fingerprint")
  if ours and theirs != ours:
    raise ValueError(
        f"the {name} at {model_path} has another tokenizer than the data at {data_path} "
        f"(tokenizer fingerprints {theirs[:12]} vs {ours[:12]}, the data's from "
        f"{data_tokenizer.get('id')!r}): distillation needs one shared tokenizer"
    )


def run(args: argparse.Namespace) -> int:
  from distil_jax.train.config import from_config_dict, load_config

  try:
    config_dict = load_config(args.config, args.overrides)
    cfg = from_config_dict(config_dict)
  except (KeyError, ValueError, TypeError, AttributeError, FileNotFoundError) as e:
    print(f"distil-jax train: config error: {e}", file=sys.stderr)
    return 2
  maybe_initialize_distributed(args)
  from distil_jax.multihost import fail_fast

  with fail_fast("distil-jax train"):  # one process failing stops all, naming it and why
    return _train(args, cfg, config_dict)


def check_export_dir(path: str) -> None:
  """`--export DIR` is checked before training, not after hours of it."""
  path = os.path.abspath(path)
  if os.path.exists(path):
    raise ValueError(f"--export {path} exists; choose a new directory")
  parent = os.path.dirname(path)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
    raise ValueError(f"--export {path}: cannot create it ({parent} is not a writable directory)")


def check_data_dir(path: str) -> None:
  from distil_jax.data import shards

  if not path:
    raise ValueError(
        "data.path is empty; pass --config.data.path=<a directory written by distil-jax prepare>"
    )
  shards.verify_shards(path, shards.read_manifest(path), checksums=True)


def _error(message) -> int:
  print(f"distil-jax train: error: {message}", file=sys.stderr)
  return 2


def _train(args, cfg, config_dict) -> int:
  import jax
  from distil_jax import checkpoints
  from distil_jax.data import make_iterator
  from distil_jax.train import workdir as wd
  from distil_jax.train.checkpoint import CheckpointUnreadable
  from distil_jax.train.loop import train
  from distil_jax.train.metrics import NonFiniteError
  from distil_jax.train.positions import TooManyPositions

  # Inputs first: nothing is created or rewritten in the workdir until they all pass.
  try:
    if getattr(cfg.loss, "batches", None) is None:  # token data (DPO pairs check their own)
      check_data_dir(cfg.data.path)
      cfg = _bind_to_data(cfg)  # KD: the shared vocabulary; a teacher with another tokenizer
    elif not cfg.data.path:
      raise ValueError(
          "data.path is empty; pass --config.data.path=<a directory written by "
          "distil-jax prepare-pairs>"
      )
    cfg = _bind_positions(cfg)
    if args.export:
      check_export_dir(args.export)
  except (OSError, ValueError) as e:
    if jax.process_count() > 1:
      raise  # fail_fast: `process N failed: <this message>` on every process
    return _error(e)
  if cfg.data.batch_size % jax.process_count():
    print(
        f"distil-jax train: config error: data.batch_size={cfg.data.batch_size} does not "
        f"divide over {jax.process_count()} processes",
        file=sys.stderr,
    )
    return 2
  os.makedirs(args.workdir, exist_ok=True)
  lock = wd.WorkdirLock(args.workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  try:
    with lock:
      if getattr(lock, "took_over", ""):
        print(
            f"distil-jax train: taking over the workdir lock of a process that is gone ({lock.took_over})",
            file=sys.stderr,
        )
      wd.check_resume(args.workdir, cfg.model, checkpoints.CONFIG_FILE)
      if jax.process_index() == 0:
        _write_atomically(os.path.join(args.workdir, "config.json"), config_dict.to_json(indent=2))
        _write_atomically(
            os.path.join(args.workdir, checkpoints.CONFIG_FILE),  # lets `export` read the run
            json.dumps(checkpoints.config_to_json(cfg.model), indent=2),
        )
      return _train_locked(args, cfg, make_iterator, train)
  except (wd.WorkdirError, CheckpointUnreadable) as e:
    if jax.process_count() > 1:
      raise  # the lock is process 0's alone: fail_fast must stop the others too
    return _error(e)
  except NonFiniteError as e:
    print(f"distil-jax train: {e}", file=sys.stderr)
    return 1
  except TooManyPositions as e:
    if jax.process_count() > 1:
      raise
    return _error(e)


def _train_locked(args, cfg, make_iterator, train) -> int:
  import jax

  make_batches = getattr(cfg.loss, "batches", None)  # a loss with its own data (DPO pairs)
  if make_batches is not None:
    try:
      batches = make_batches(cfg, shard_index=jax.process_index(), shard_count=jax.process_count())
    except (ValueError, FileNotFoundError) as e:
      if jax.process_count() > 1:
        raise
      return _error(f"data: {e}")
  else:
    extra = {"teacher_store": cfg.data.teacher_store} if cfg.data.teacher_store else {}
    batches = make_iterator(
        cfg.data.path,
        seq_len=cfg.data.seq_len,
        **extra,
        batch_size=cfg.data.batch_size // jax.process_count(),
        seed=cfg.data.seed,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        max_documents_per_row=cfg.model.max_segments_per_row or None,
        num_epochs=cfg.data.num_epochs or None,
        worker_count=cfg.data.worker_count,
    )
  result = train(cfg, args.workdir, batches, progress=not args.no_progress)
  summary = {
      "step": result.step,
      "preempted": result.preempted,
      "data_exhausted": result.data_exhausted,
      **result.last_metrics,
  }
  if jax.process_index() == 0:
    print(json.dumps(summary))
  if args.export and not result.preempted:
    from flax import nnx
    from distil_jax.hf import save_pretrained
    from distil_jax.tokenizer import load_tokenizer

    model = nnx.merge(result.graphdef, result.state.params)
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    save_pretrained(model, args.export, tokenizer=tokenizer)
    if jax.process_index() == 0:
      print(f"exported the student to {args.export}")
  return 0
