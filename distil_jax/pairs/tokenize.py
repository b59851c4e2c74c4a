"""Preference pairs -> tokenized pair shards: prompt + chosen and prompt + rejected rendered with
the real chat template (`distil_jax.data.chat.ChatEncoder`), a loss mask on the response only.

Response mask: 1 on the final assistant turn's content and its closing `<|im_end|>`, 0 on the
system/user turns, on the assistant header, and on the `\\n` after `<|im_end|>` (the same tokens
`prepare` trains on for SFT, restricted to the answer being compared).

Truncation (`max_length`, tokens of one sequence, prompt included):
- "truncate" (default): keep the first `max_length` tokens, so the prompt stays whole and a long
  answer loses its tail; a pair left without a response token on either side is dropped
  (`overlong_no_response_left`). Both sides are truncated independently.
- "drop": drop the pair when either side is longer (`overlong`).

Record: `b"DJP1"`, uint32 LE header length, JSON header `{"id", "hash", "chosen_n", "rejected_n"}`,
then int32 LE chosen ids, uint8 chosen mask, int32 LE rejected ids, uint8 rejected mask.
`hash` (`token_hash`) is a SHA-256 prefix of the four arrays: reference log-probs are stored under
(id, hash), so a pair retokenized differently never meets stale log-probs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

from distil_jax.data.chat import ChatEncoder
from distil_jax.pairs import format as pair_format

MAGIC = b"DJP1"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "distil_jax.tokenized_pairs.v1"
SHARD_NAME = "pairs-{index:05d}.array_record"
OVERLONG_POLICIES = ("truncate", "drop")


def token_hash(chosen_ids, chosen_mask, rejected_ids, rejected_mask) -> str:
  digest = hashlib.sha256()
  for a, dtype in (
      (chosen_ids, "<i4"),
      (chosen_mask, "u1"),
      (rejected_ids, "<i4"),
      (rejected_mask, "u1"),
  ):
    digest.update(np.asarray(a).astype(dtype).tobytes())
    digest.update(b"|")
  return digest.hexdigest()[:20]


def encode_pair_record(pair_id: str, chosen_ids, chosen_mask, rejected_ids, rejected_mask) -> bytes:
  header = json.dumps(
      {
          "id": pair_id,
          "hash": token_hash(chosen_ids, chosen_mask, rejected_ids, rejected_mask),
          "chosen_n": int(len(chosen_ids)),
          "rejected_n": int(len(rejected_ids)),
      }
  ).encode()
  return b"".join(
      (
          MAGIC,
          struct.pack("<I", len(header)),
          header,
          np.asarray(chosen_ids, "<i4").tobytes(),
          np.asarray(chosen_mask, np.uint8).tobytes(),
          np.asarray(rejected_ids, "<i4").tobytes(),
          np.asarray(rejected_mask, np.uint8).tobytes(),
      )
  )


def decode_pair_record(record: bytes) -> dict:
  """-> {"id", "hash", "chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask"}."""
  if record[:4] != MAGIC:
    raise ValueError(f"not a distil-jax tokenized pair record (starts with {record[:4]!r})")
  (header_len,) = struct.unpack_from("<I", record, 4)
  header = json.loads(record[8 : 8 + header_len])
  offset, out = 8 + header_len, {"id": header["id"], "hash": header["hash"]}
  for side in ("chosen", "rejected"):
    n = header[f"{side}_n"]
    out[f"{side}_ids"] = np.frombuffer(record, "<i4", count=n, offset=offset).astype(np.int32)
    out[f"{side}_mask"] = np.frombuffer(record, np.uint8, count=n, offset=offset + 4 * n)
    offset += 5 * n
  return out


def response_encodings(encoder: ChatEncoder, prompt: list[dict], answers: list[str]):
  """(ids int32, response mask uint8) of prompt + each answer."""
  conversations = [prompt] + [prompt + [{"role": "assistant", "content": a}] for a in answers]
  encoded = encoder.encode(conversations)
  prompt_ids = encoded[0][0]
  out = []
  for ids, mask in encoded[1:]:
    if not np.array_equal(
        ids[: len(prompt_ids)], prompt_ids
    ):  # the template must extend the prompt
      raise ValueError(
          "the chat template does not render the prompt as a prefix of the conversation"
      )
    mask = mask.copy()
    mask[: len(prompt_ids)] = 0  # earlier assistant turns of a multi-turn prompt are not compared
    out.append((ids, mask))
  return out


def write_tokenized_pairs(output, records, *, shard_size: int = 10_000, **manifest_fields) -> dict:
  """Writes `(pair_id, chosen_ids, chosen_mask, rejected_ids, rejected_mask)` tuples as pair
  shards plus manifest into a temporary directory renamed onto `output`; returns the manifest."""
  from array_record.python.array_record_module import ArrayRecordWriter

  output = Path(output)
  output.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
  shards, longest, fingerprint, writer = [], 0, hashlib.sha256(), None
  targets_max = 0  # the most response tokens of one side (an upper bound on its trained positions)
  try:
    for pair_id, c_ids, c_mask, r_ids, r_mask in records:
      record = encode_pair_record(pair_id, c_ids, c_mask, r_ids, r_mask)
      if writer is None or shards[-1]["pairs"] >= shard_size:
        if writer is not None:
          writer.close()
        shards.append({"path": SHARD_NAME.format(index=len(shards)), "pairs": 0})
        writer = ArrayRecordWriter(str(tmp / shards[-1]["path"]), "group_size:1")
      writer.write(record)
      shards[-1]["pairs"] += 1
      longest = max(longest, len(c_ids), len(r_ids))
      targets_max = max(targets_max, int(np.sum(c_mask)), int(np.sum(r_mask)))
      fingerprint.update(record[: 8 + struct.unpack_from("<I", record, 4)[0]])  # id and hash
    if writer is not None:
      writer.close()
    manifest = {
        "format": MANIFEST_FORMAT,
        "longest": int(longest),
        "targets_max": targets_max,
        "shards": shards,
        "pairs": sum(s["pairs"] for s in shards),
        "fingerprint": fingerprint.hexdigest()[:20],
        **manifest_fields,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    os.chmod(tmp, 0o755)
    if output.exists():
      shutil.rmtree(output)
    os.rename(tmp, output)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return manifest


def prepare_pairs(
    inputs,
    output,
    *,
    tokenizer=None,
    max_length: int = 2048,
    overlong: str = "truncate",
    shard_size: int = 10_000,
) -> dict:
  """Tokenizes pair files (or directories of them) into `output`; returns the manifest."""
  from distil_jax import tokenizer as tokenizer_lib

  if overlong not in OVERLONG_POLICIES:
    raise ValueError(f"overlong must be one of {OVERLONG_POLICIES}, got {overlong!r}")
  if max_length < 2:
    raise ValueError(f"max_length must be >= 2, got {max_length}")
  files = pair_format.pair_files(inputs)
  if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
    tokenizer = tokenizer_lib.load_tokenizer(tokenizer)
  encoder = ChatEncoder(tokenizer)
  counts = {
      "pairs_read": 0,
      "pairs": 0,
      "truncated": 0,
      "overlong": 0,
      "overlong_no_response_left": 0,
      "duplicate_ids": 0,
  }

  def tokenized():
    seen = set()
    for path in files:
      for pair in pair_format.read_pairs(path):
        counts["pairs_read"] += 1
        if pair["id"] in seen:
          counts["duplicate_ids"] += 1  # a pair id must name one pair: the join is by id
          continue
        encoded = response_encodings(encoder, pair["prompt"], [pair["chosen"], pair["rejected"]])
        if any(len(ids) > max_length for ids, _ in encoded):
          if overlong == "drop":
            counts["overlong"] += 1
            continue
          encoded = [(ids[:max_length], mask[:max_length]) for ids, mask in encoded]
          if not all(mask[1:].any() for _, mask in encoded):
            counts["overlong_no_response_left"] += 1
            continue
          counts["truncated"] += 1
        seen.add(pair["id"])
        counts["pairs"] += 1
        (c_ids, c_mask), (r_ids, r_mask) = encoded
        yield pair["id"], c_ids, c_mask, r_ids, r_mask

  return write_tokenized_pairs(
      output,
      tokenized(),
      shard_size=shard_size,
      max_length=max_length,
      overlong=overlong,
      counts=counts,
      sources=[str(p.resolve()) for p in files],
      tokenizer={
          "id": tokenizer.name_or_path,
          "fingerprint": tokenizer_lib.tokenizer_fingerprint(tokenizer),
      },
  )


def read_manifest(directory) -> dict:
  path = Path(directory) / MANIFEST
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no manifest (was it written by `distil-jax prepare-pairs`?)")
  manifest = json.loads(path.read_text())
  if manifest.get("format") != MANIFEST_FORMAT:
    raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
  return manifest


def shard_paths(directory) -> list[Path]:
  return [Path(directory) / s["path"] for s in read_manifest(directory)["shards"]]


def read_pair_shard(path) -> list[dict]:
  from array_record.python.array_record_module import ArrayRecordReader

  reader = ArrayRecordReader(str(path))
  try:
    return [decode_pair_record(raw) for raw in reader.read_all()]
  finally:
    reader.close()


SIDES = ("chosen", "rejected")
SIDE_FEATURES = ("input_ids", "target_ids", "loss_mask", "positions", "segment_ids")


def side_features(ids: np.ndarray, mask: np.ndarray, seq_len: int) -> dict[str, np.ndarray]:
  """One sequence as a padded [seq_len] row: `target_ids[t] = ids[t + 1]`, `loss_mask[t] =
  mask[t + 1]` (the response tokens as targets), positions 0.., `segment_ids` 1 on tokens, 0 on
  padding. A sequence longer than `seq_len` is an error, never a silent cut: its reference
  log-probs were summed over all of its tokens."""
  n = len(ids)
  if n > seq_len:
    raise ValueError(
        f"a {n}-token sequence does not fit seq_len={seq_len}; raise seq_len to at "
        "least the pairs' max_length"
    )
  out = {
      k: np.zeros((seq_len,), np.int32)
      for k in ("input_ids", "target_ids", "positions", "segment_ids")
  }
  out["loss_mask"] = np.zeros((seq_len,), np.float32)
  out["input_ids"][:n] = ids
  out["target_ids"][: n - 1] = ids[1:]
  out["loss_mask"][: n - 1] = mask[1:]
  out["positions"][:n] = np.arange(n)
  out["segment_ids"][:n] = 1
  return out
