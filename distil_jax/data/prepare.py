"""Chat JSONL / curated ArrayRecord shards -> tokenized ArrayRecord shards plus `manifest.json`.

Everything is written into a hidden temporary directory next to the output and renamed onto it
only once every shard and the manifest are closed, so a crash never leaves a directory that
looks complete.

Over-long policy (`max_length`, in tokens of the rendered conversation):
- "truncate" (default): keep the first `max_length` tokens; an example left without any
  assistant token to learn is dropped and counted under `overlong_no_assistant_left`.
- "drop": drop the example, counted under `overlong`.
Bad records (see `formats`) are skipped and counted with their first few locations
(`file:N`, N = 1-based line of a JSONL file or 1-based record of an ArrayRecord file), or,
with `strict=True`, stop the run with a `PrepareError` naming file and line.

`require_teacher_logprobs` (curated records of `refine.agent.top_logprobs > 0`, docs/chatlp.md)
keeps only records whose `teacher_logprobs` entries re-tokenise to exactly the content's token
ids (`chat_teacher.first_mismatch`, on the untruncated example); the others are skipped as
`no_teacher_logprobs` or `teacher_logprobs_mismatch`, so the data and the `chat-logits` store
built from it stay one record per record.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from distil_jax import temporaries
from distil_jax import tokenizer as tokenizer_lib
from distil_jax.data import formats, shards
from distil_jax.data.chat import ChatEncoder

OVERLONG_POLICIES = ("truncate", "drop")
FIRST_LOCATIONS_KEPT = 5
_ENCODE_BATCH = 256


class PrepareError(ValueError):
  """A bad record under `strict`, or unusable arguments; the message names file and line."""


def prepare_dataset(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    tokenizer=None,
    max_length: int = 2048,
    overlong: str = "truncate",
    strict: bool = False,
    shard_size: int = 10_000,
    overwrite: bool = False,
    require_teacher_logprobs: bool = False,
) -> dict:
  """Tokenizes `inputs` (`*.jsonl` or `*.array_record`) into `output`; returns the manifest.

  `tokenizer`: a HF tokenizer directory, an already loaded tokenizer, or None for the offline
  Qwen2.5 one; the manifest records its `name_or_path` and a fingerprint of its vocabulary.
  """
  if overlong not in OVERLONG_POLICIES:
    raise PrepareError(f"overlong must be one of {OVERLONG_POLICIES}, got {overlong!r}")
  if max_length < 2:
    raise PrepareError(f"max_length must be >= 2, got {max_length}")
  inputs = [Path(p) for p in inputs]
  for path in inputs:
    if not path.is_file():
      raise PrepareError(f"{path}: no such input file")
  output = Path(output)
  if output.exists() and any(output.iterdir()) and not overwrite:
    raise PrepareError(f"{output} exists and is not empty (pass overwrite=True / --overwrite)")

  if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
    tokenizer = tokenizer_lib.load_tokenizer(tokenizer)
  output.parent.mkdir(parents=True, exist_ok=True)
  temporaries.remove_abandoned(str(output), hidden=True)  # left by a killed prepare
  tmp = Path(temporaries.temporary_name(str(output), hidden=True))
  tmp.mkdir()
  _chmod_like_mkdir(tmp)
  try:
    run = _Run(tokenizer, tmp, max_length, overlong, strict, shard_size)
    if require_teacher_logprobs:
      from distil_jax.data.api_teacher import TokenMap  # noqa: PLC0415 (decodes the vocabulary)

      run.token_map = TokenMap.cached(
          tokenizer, len(tokenizer), tokenizer_lib.tokenizer_fingerprint(tokenizer)
      )
    manifest = run.run(inputs)
    if require_teacher_logprobs:
      manifest["require_teacher_logprobs"] = True
    if not manifest["counts"]["examples"]:
      reasons = ", ".join(
          f"{n['count']} {r} (first at {n['first'][0]})" for r, n in manifest["skipped"].items()
      )
      raise PrepareError(
          f"no usable examples in {', '.join(map(str, inputs))}: "
          f"{manifest['counts']['records_read']} records read"
          + (f", skipped {reasons}" if reasons else "")
          + f"; {output} not written"
      )
    manifest["tokenizer"] = {
        "id": tokenizer.name_or_path,
        "fingerprint": tokenizer_lib.tokenizer_fingerprint(tokenizer),
        "vocab_size": len(tokenizer),
    }
    _write_json_atomically(tmp / shards.MANIFEST, manifest)
    _replace_dir(tmp, output)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return manifest


class _Run:
  """One prepare run: counters, the encoder and the shard writer."""

  def __init__(
      self,
      tokenizer,
      directory: Path,
      max_length: int,
      overlong: str,
      strict: bool,
      shard_size: int,
  ):
    self.encoder = ChatEncoder(tokenizer)
    self.writer = shards.ShardWriter(directory, shard_size)
    self.max_length, self.overlong, self.strict = max_length, overlong, strict
    self.skipped: dict[str, dict] = {}
    self.lengths: list[int] = []
    self.assistant_targets = 0
    self.targets_max = 0  # the most trained positions of one example (`loss_positions=-1`)
    self.truncated = 0
    self.seen_ids: set[str] = set()
    self.duplicate_ids = 0
    self.token_map = None  # set: keep only records whose teacher_logprobs fit their tokens

  def run(self, inputs: list[Path]) -> dict:
    started = time.time()
    sources, records_read = [], 0
    for path in inputs:
      digest, kept_before, pending = hashlib.sha256(), len(self.lengths), []
      for location, raw in _read_source(path, digest):
        records_read += 1
        try:
          record = formats.parse_line(raw)
          messages = formats.to_messages(record)
        except formats.BadExample as e:
          self._skip(e.reason, location, e.detail)
          continue
        example_id = formats.example_id(record, messages)
        pending.append((location, example_id, messages, record.get("teacher_logprobs")))
        if len(pending) >= _ENCODE_BATCH:
          self._flush(pending)
      self._flush(pending)
      sources.append(
          {
              "path": str(path.resolve()),
              "sha256": digest.hexdigest(),
              "bytes": path.stat().st_size,
              "examples": len(self.lengths) - kept_before,
          }
      )
    self.writer.close()
    return self._manifest(sources, records_read, time.time() - started)

  def _flush(self, pending: list) -> None:
    encoded = self.encoder.encode([messages for _, _, messages, _ in pending])
    for (location, example_id, _, entries), (ids, mask) in zip(pending, encoded):
      if self.token_map is not None and not self._fits(location, entries, ids, mask):
        continue
      if ids.shape[0] > self.max_length:
        if self.overlong == "drop":
          self._skip("overlong", location, f"{ids.shape[0]} tokens > {self.max_length}")
          continue
        ids, mask = ids[: self.max_length], mask[: self.max_length]
        if not mask[1:].any():
          self._skip(
              "overlong_no_assistant_left",
              location,
              f"no assistant token within the first {self.max_length}",
          )
          continue
        self.truncated += 1
      if example_id in self.seen_ids:
        self.duplicate_ids += 1
      self.seen_ids.add(example_id)
      self.writer.write(shards.encode_record(example_id, ids, mask), int(ids.shape[0]))
      self.lengths.append(int(ids.shape[0]))
      self.assistant_targets += int(mask[1:].sum())  # the first token is never a target
      self.targets_max = max(self.targets_max, int(mask[1:].sum()))
    pending.clear()

  def _fits(self, location: str, entries, ids: np.ndarray, mask: np.ndarray) -> bool:
    """Do the record's teacher log-prob entries realise its content tokens? Skips it if not."""
    from distil_jax.data import chat_teacher  # noqa: PLC0415

    if not entries or not isinstance(entries, list):
      self._skip("no_teacher_logprobs", location, "the record has no teacher_logprobs entries")
      return False
    try:
      start = chat_teacher.content_span(ids, mask, location)
      bad = chat_teacher.first_mismatch(entries, ids, start, self.token_map)
    except (chat_teacher.ChatLogprobError, KeyError, TypeError) as e:
      self._skip("teacher_logprobs_mismatch", location, f"{type(e).__name__}: {e}")
      return False
    if bad is not None:
      detail = chat_teacher.describe(entries, ids, start, bad, self.token_map)
      self._skip("teacher_logprobs_mismatch", location, f"answer token {bad}: {detail}")
      return False
    return True

  def _skip(self, reason: str, location: str, detail: str) -> None:
    if self.strict:
      raise PrepareError(f"{location}: {reason}: {detail}")
    entry = self.skipped.setdefault(reason, {"count": 0, "first": []})
    entry["count"] += 1
    if len(entry["first"]) < FIRST_LOCATIONS_KEPT:
      entry["first"].append(location)

  def _manifest(self, sources: list, records_read: int, seconds: float) -> dict:
    lengths = np.asarray(self.lengths or [0])
    return {
        "format": shards.MANIFEST_FORMAT,
        "record_format": shards.RECORD_FORMAT,
        "max_length": self.max_length,
        "overlong": self.overlong,
        "counts": {
            "records_read": records_read,
            "examples": len(self.lengths),
            "skipped": sum(e["count"] for e in self.skipped.values()),
            "truncated": self.truncated,
            "duplicate_ids": self.duplicate_ids,
        },
        "tokens": {
            "total": int(lengths.sum()) if self.lengths else 0,
            "assistant_targets": self.assistant_targets,
            "targets_max": self.targets_max,
            "min": int(lengths.min()),
            "max": int(lengths.max()),
            "mean": round(float(lengths.mean()), 2),
            "p50": int(np.percentile(lengths, 50)),
            "p95": int(np.percentile(lengths, 95)),
        },
        "shards": self.writer.shards,
        "sources": sources,
        "skipped": self.skipped,
        "seconds": round(seconds, 2),
    }


def _read_source(path: Path, digest) -> Iterator[tuple[str, bytes]]:
  """(location, raw record bytes) for each non-blank JSONL line or ArrayRecord record."""
  if path.name.endswith(shards.SHARD_SUFFIX):
    digest.update(path.read_bytes())
    for i, raw in enumerate(shards.read_records(path), start=1):
      yield f"{path}:{i}", raw
    return
  with path.open("rb") as f:
    for i, line in enumerate(f, start=1):
      digest.update(line)
      line = line.rstrip(b"\r\n")
      if line.strip():
        yield f"{path}:{i}", line


def _write_json_atomically(path: Path, obj: dict) -> None:
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
  os.replace(tmp, path)


def _chmod_like_mkdir(path: Path) -> None:
  """mkdtemp makes 0700 directories; the output should get the usual umask-derived mode."""
  umask = os.umask(0)
  os.umask(umask)
  path.chmod(0o777 & ~umask)


def _replace_dir(src: Path, dst: Path) -> None:
  """Renames the finished `src` onto `dst`; an old `dst` is moved aside first, then deleted."""
  old = None
  if dst.exists():
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    os.rename(dst, old)
  os.rename(src, dst)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
