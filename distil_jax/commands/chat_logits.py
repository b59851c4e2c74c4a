"""`distil-jax chat-logits`: the offline teacher store from curated chat-time log-probs.

  distil-jax chat-logits --curated CURATED_DIR --data PREPARED_DIR --output STORE_DIR \
      [--top_k K] [--unit_size N]

`distil-jax curate` with `refine.agent.top_logprobs = K` keeps the teacher's chat log-probs of
its own answer in each curated record (`teacher_logprobs`); `distil-jax prepare` tokenises those
records (`--require_teacher_logprobs` keeps only the ones whose entries re-tokenise exactly).
This command matches every prepared example to its curated record by id and writes the store
format `distil-jax teacher-logits` writes (mapping rules: `distil_jax/data/chat_teacher.py`),
with `partial_positions: true`: the position predicting `<|im_end|>` has no distribution (no
chat API scores it) and trains on its hard label (`kd_mask` 0). An example without a curated
record or entries, or whose entries re-tokenise to other ids, is refused naming its id and
position. Work units, resume, settings lock and temporary names are those of `teacher-logits`.
Prints one JSON line. No JAX is imported; no request is sent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--curated",
      required=True,
      metavar="CURATED_DIR",
      help="a `distil-jax curate` output directory (curated-*.array_record) or shard files",
      nargs="+",
  )
  parser.add_argument(
      "--data",
      required=True,
      metavar="DATA_DIR",
      help="`distil-jax prepare` of those curated shards",
  )
  parser.add_argument("--output", required=True, metavar="STORE_DIR")
  parser.add_argument(
      "--top_k",
      type=int,
      default=0,
      help="alternatives per position (default: as many as the first example's first entry has)",
  )
  parser.add_argument(
      "--max_length",
      type=int,
      default=None,
      help="store positions t < max_length only (default: the data's)",
  )
  parser.add_argument("--logprob_dtype", default="float16", choices=["float16", "float32"])
  parser.add_argument(
      "--tokenizer",
      default=None,
      metavar="HF_DIR",
      help="the shared tokenizer (default: the data's); its fingerprint must be the data's",
  )
  parser.add_argument("--unit_size", type=int, default=1024, help="records per work unit")


def _fail(message: str) -> int:
  print(f"distil-jax chat-logits: {message}", file=sys.stderr)
  return 2


def run(args: argparse.Namespace) -> int:
  from distil_jax.data import api_teacher, chat_teacher, shards, teacher_store

  if args.unit_size < 1 or args.top_k < 0:
    return _fail(f"--unit_size must be >= 1 and --top_k >= 0 (got {args.unit_size}, {args.top_k})")
  try:
    curated = _CuratedIndex(args.curated)
    data_manifest = shards.read_manifest(args.data)
    return _run(args, curated, data_manifest)
  except (
      FileNotFoundError,
      ValueError,
      api_teacher.EchoError,
      chat_teacher.ChatLogprobError,
      teacher_store.StoreError,
  ) as e:
    return _fail(str(e))


class _CuratedIndex:
  """Curated records by id: where each lies (shard file, record number), read on demand."""

  def __init__(self, sources: list[str]):
    from array_record.python.array_record_module import ArrayRecordReader

    paths: list[Path] = []
    for source in map(Path, sources):
      found = sorted(source.glob("curated-*.array_record")) if source.is_dir() else [source]
      if not found or not all(p.is_file() for p in found):
        raise FileNotFoundError(f"{source}: no curated shards (curated-*.array_record)")
      paths += found
    self._readers = [ArrayRecordReader(str(p)) for p in paths]
    self._paths = paths
    self._where: dict[str, tuple[int, int]] = {}
    for f, reader in enumerate(self._readers):
      for n, raw in enumerate(reader.read_all()):
        record_id = str(json.loads(raw)["id"])
        if record_id in self._where:
          raise ValueError(f"{paths[f]}:{n + 1}: curated id {record_id!r} appears twice")
        self._where[record_id] = (f, n)
    self.paths = [str(p.resolve()) for p in paths]

  def entries(self, example_id: str, name: str) -> list[dict]:
    if example_id not in self._where:
      raise ValueError(f"{name}: no curated record has this id (other curated data?)")
    f, n = self._where[example_id]
    record = json.loads(self._readers[f].read([n])[0])
    entries = record.get("teacher_logprobs")
    if not entries:
      raise ValueError(
          f"{name}: curated record {self._paths[f]}:{n + 1} has no teacher_logprobs (curate with "
          "refine.agent.top_logprobs > 0; prepare --require_teacher_logprobs drops such records)"
      )
    return entries


def _settings(args, data_manifest: dict, curated: _CuratedIndex, top_k: int):
  from distil_jax.data import api_teacher, chat_teacher

  tokenizer, settings = api_teacher.store_settings(
      args.data,
      data_manifest,
      tokenizer_path=args.tokenizer,
      top_k=top_k,
      logprob_dtype=args.logprob_dtype,
      max_length=args.max_length,
      unit_size=args.unit_size,
      teacher={"source": "chat", "curated": curated.paths},
  )
  # The position predicting each example's final `<|im_end|>` has no distribution.
  settings.update(partial_positions=True, unscored_token=chat_teacher.END_TOKEN)
  return tokenizer, settings


def _run(args, curated: _CuratedIndex, data_manifest: dict) -> int:
  from array_record.python.array_record_data_source import ArrayRecordDataSource
  from distil_jax.data import api_teacher, chat_teacher, shards, teacher_store

  source = ArrayRecordDataSource(
      [str(Path(args.data) / s["path"]) for s in data_manifest["shards"] if s["examples"]]
  )
  top_k = args.top_k
  if not top_k:  # the curated K: the first example's first entry
    first_id = shards.decode_record(source[0])[0]
    top_k = len(curated.entries(first_id, f"example {first_id!r} (record 0)")[0]["top_logprobs"])
  tokenizer, settings = _settings(args, data_manifest, curated, top_k)
  store_dir = Path(args.output)
  teacher_store.begin_store(store_dir, settings)
  units = teacher_store.unit_ranges(settings["data"]["examples"], args.unit_size)
  todo = [u for u in range(len(units)) if not teacher_store.unit_done(store_dir, u)]
  token_map = api_teacher.TokenMap.cached(
      tokenizer, settings["vocab_columns"], settings["tokenizer"]["fingerprint"]
  )
  dtype = np.dtype(args.logprob_dtype)
  started = time.perf_counter()
  for u in todo:
    start, end = units[u]
    writer = teacher_store.UnitWriter(store_dir, u, start, end)
    counts = {**dataclasses.asdict(api_teacher.Counts()), "unscored_positions": 0}
    try:
      for index in range(start, end):
        example_id, ids, mask = shards.decode_record(source[index])
        name = f"example {example_id!r} (record {index})"
        rec, mapped = chat_teacher.to_record(
            curated.entries(example_id, name),
            example_id=example_id,
            index=index,
            ids=np.asarray(ids),
            mask=mask,
            max_length=settings["max_length"],
            top_k=top_k,
            token_map=token_map,
            logprob_dtype=dtype,
            where=str(args.data),
        )
        writer.write(rec)
        for k, v in dataclasses.asdict(mapped).items():
          counts[k] += v
        trained = len(teacher_store.target_positions(mask, settings["max_length"]))
        counts["unscored_positions"] += trained - len(rec.positions)
    except BaseException:
      writer.abandon()
      raise
    writer.finish()
    teacher_store.write_json_atomically(
        store_dir / f"{teacher_store.unit_name(u)}.chat.json", counts
    )
  manifest = teacher_store.finish_store(store_dir, len(units))
  manifest["chat"] = teacher_store.sum_unit_counts(store_dir, len(units), "chat")
  teacher_store.write_json_atomically(store_dir / teacher_store.MANIFEST, manifest)
  summary = {
      "units_computed": len(todo),
      "seconds": round(time.perf_counter() - started, 2),
      "stored_positions": manifest["counts"]["stored_positions"],
      "bytes_per_stored_token": manifest["bytes_per_stored_token"],
      **{k: v for k, v in manifest["chat"].items() if k != "positions"},
      "output": str(store_dir),
  }
  print(json.dumps(summary))
  return 0
