"""The reference model's summed response log-probs for every tokenized pair, computed once.

One pass over the tokenized pair shards: each batch of pairs becomes `2 * batch_size` rows
(chosen rows then rejected rows), padded to a power-of-two length (few compilations), and one
jitted call returns each row's masked sum of log-probs through `sequence_logprobs` (chunked over
the sequence: no [B, L, V] logits). With several processes each supplies its slice of the rows of
one global batch (as in training) and process 0 writes.

Output directory: `ref-00000.jsonl`, ... one per pair shard, written under a temporary name and
renamed (a rerun skips the finished ones), each line
`{"id", "hash", "ref_chosen_logp", "ref_rejected_logp", "chosen_tokens", "rejected_tokens"}`;
and `manifest.json` naming the model and the fingerprint of the pairs it was computed for.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from distil_jax.pairs import format as pair_format
from distil_jax.pairs import tokenize
from distil_jax.sharding import DEFAULT_RULES, logical_to_spec, use_mesh
from distil_jax.train import positions
from distil_jax.train.sequence_logprobs import sequence_logprobs

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "distil_jax.reference_logprobs.v1"
SHARD_NAME = "ref-{index:05d}.jsonl"


def _bucket(n: int, minimum: int = 16) -> int:
  return max(minimum, 1 << max(0, n - 1).bit_length())


@functools.partial(jax.jit, static_argnames=("graphdef", "chunk", "positions"))
def _row_logprobs(graphdef, state, batch, *, chunk: int, positions: int = 0):
  model = nnx.merge(graphdef, state)
  h_BxLxD, _ = model.hidden_states(batch["input_ids"], batch["positions"], batch["segment_ids"])
  return sequence_logprobs(
      h_BxLxD,
      model.unembed_matrix(),
      batch["target_ids"],
      batch["loss_mask"],
      chunk=chunk,
      positions=positions,
  )


def pair_batch_rows(records: list[dict], rows: int, seq_len: int) -> dict[str, np.ndarray]:
  """`rows` padded rows: the chosen sides, the rejected sides, then empty rows."""
  sides = [(r[f"{s}_ids"], r[f"{s}_mask"]) for s in tokenize.SIDES for r in records]
  empty = (np.zeros((1,), np.int32), np.zeros((1,), np.uint8))
  feats = [
      tokenize.side_features(ids, mask, seq_len)
      for ids, mask in sides + [empty] * (rows - len(sides))
  ]
  return {k: np.stack([f[k] for f in feats]) for k in tokenize.SIDE_FEATURES}


def compute_reference_logprobs(
    model,
    mesh,
    pairs_dir,
    output,
    *,
    model_name: str,
    batch_size: int = 8,
    chunk: int = 256,
    loss_positions: int = 0,
    rules=DEFAULT_RULES,
    log=print,
) -> dict:
  """Writes (or completes) the reference log-probs of `pairs_dir` into `output`.

  `loss_positions` as the DPO run's `config.loss_positions` (0: every position; K > 0: the LM
  head only at each row's first K response positions; -1: the bound in the pairs' manifest):
  with the run's own setting, the reference sums are the ones the train step would compute, so
  a policy at the reference's weights has rewards of exactly 0."""
  pairs_manifest = tokenize.read_manifest(pairs_dir)
  output = Path(output)
  run_key = {
      "model": model_name,
      "pairs": str(Path(pairs_dir).resolve()),
      "pairs_fingerprint": pairs_manifest["fingerprint"],
  }
  writer = jax.process_index() == 0
  manifest_path = output / MANIFEST
  if manifest_path.is_file():
    old = json.loads(manifest_path.read_text())
    if old.get("run") != run_key:
      raise ValueError(
          f"{manifest_path}: computed for {old.get('run')}, not {run_key}; " "use a new --output"
      )
  elif writer:
    output.mkdir(parents=True, exist_ok=True)
    _write_json(manifest_path, {"format": MANIFEST_FORMAT, "run": run_key, "complete": False})
  rows = 2 * batch_size
  processes = jax.process_count()
  batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if rows % processes or rows % batch_shards:
    raise ValueError(
        f"2 * batch_size = {rows} rows do not divide over {processes} processes "
        f"and {batch_shards} batch shards of the mesh; change --batch_size"
    )
  sharding = NamedSharding(mesh, logical_to_spec(("batch", "seq"), rules))
  if loss_positions < 0:
    loss_positions = positions.from_manifest(
        pairs_manifest, 1 << 30, None, str(Path(pairs_dir) / tokenize.MANIFEST)
    )
  graphdef, state = nnx.split(model)
  with use_mesh(mesh, rules):
    for index, shard in enumerate(pairs_manifest["shards"]):
      name = SHARD_NAME.format(index=index)
      if (output / name).is_file():
        continue
      records = tokenize.read_pair_shard(Path(pairs_dir) / shard["path"])
      lines = []
      for start in range(0, len(records), batch_size):
        batch_records = records[start : start + batch_size]
        seq_len = _bucket(max(len(r[f"{s}_ids"]) for r in batch_records for s in tokenize.SIDES))
        batch = pair_batch_rows(batch_records, rows, seq_len)
        keep = loss_positions if 0 < loss_positions < seq_len else 0
        positions.check_rows(batch, {"loss_mask": None}, keep, start // batch_size)
        local = rows // processes
        me = jax.process_index()
        batch = {
            k: jax.make_array_from_process_local_data(
                sharding, v[me * local : (me + 1) * local], v.shape
            )
            for k, v in batch.items()
        }
        logp = np.asarray(
            multihost_utils.process_allgather(
                _row_logprobs(graphdef, state, batch, chunk=chunk, positions=keep), tiled=True
            ),
            np.float32,
        )
        n = len(batch_records)
        for i, r in enumerate(batch_records):
          lines.append(
              {
                  "id": r["id"],
                  "hash": r["hash"],
                  "ref_chosen_logp": float(logp[i]),
                  "ref_rejected_logp": float(logp[n + i]),
                  "chosen_tokens": int(r["chosen_mask"][1:].sum()),
                  "rejected_tokens": int(r["rejected_mask"][1:].sum()),
              }
          )
      if writer:
        pair_format.write_jsonl_atomically(output / name, lines)
      log(f"ref-logprobs: {name}: {len(lines)} pairs")
  manifest = {
      "format": MANIFEST_FORMAT,
      "run": run_key,
      "complete": True,
      "shards": [SHARD_NAME.format(index=i) for i in range(len(pairs_manifest["shards"]))],
      "pairs": pairs_manifest["pairs"],
  }
  if writer:
    _write_json(manifest_path, manifest)
  return manifest


def load_reference_logprobs(directory, pairs_dir=None) -> dict[str, tuple[str, float, float]]:
  """pair id -> (token hash, ref chosen logp, ref rejected logp). With `pairs_dir`, checks the
  log-probs were computed for those very pairs (the fingerprint of their ids and hashes)."""
  path = Path(directory) / MANIFEST
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no manifest (was it written by `distil-jax ref-logprobs`?)")
  manifest = json.loads(path.read_text())
  if manifest.get("format") != MANIFEST_FORMAT or not manifest.get("complete"):
    raise ValueError(f"{path}: not a complete reference log-prob directory (rerun ref-logprobs)")
  if pairs_dir is not None:
    want = tokenize.read_manifest(pairs_dir)["fingerprint"]
    if manifest["run"]["pairs_fingerprint"] != want:
      raise ValueError(
          f"{path}: computed for pairs with fingerprint "
          f"{manifest['run']['pairs_fingerprint']}, but {pairs_dir} has {want}"
      )
  table = {}
  for name in manifest["shards"]:
    with open(Path(directory) / name, encoding="utf-8") as f:
      for line in f:
        row = json.loads(line)
        table[row["id"]] = (row["hash"], row["ref_chosen_logp"], row["ref_rejected_logp"])
  return table


def _write_json(path: Path, obj: dict) -> None:
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(json.dumps(obj, indent=2) + "\n")
  os.replace(tmp, path)
