"""The offline teacher store: a teacher's top-k next-token distributions per prepared example.

Layout of a store directory (written by `distil-jax teacher-logits`):
- `settings.json`: what the store is being built from (teacher, data, K, dtype, ...), written
  first; a rerun with other settings is refused, a rerun with the same ones resumes.
- `unit-00000.array_record` + `unit-00000.json`, ...: one file per work unit, a contiguous range
  `[start, end)` of global record indices of the data, in record order; the `.json` sidecar (its
  counts) is written after the ArrayRecord file is renamed into place and marks the unit done.
  Both are written under temporary names and renamed when complete.
- `manifest.json`: written last, once every unit is done: the settings, counts, bytes per
  stored token and the list of units. A directory without it is an unfinished store.

One ArrayRecord record per data example, at the example's global record index:
`b"DJK1"`, a little-endian uint32 header length, a UTF-8 JSON header
`{"id", "index", "sha256", "n", "m", "k", "dtype"}` (example id, global record index, sha256 of
the example's int32 LE token ids, their number, the number of stored positions, K, the stored
log-prob dtype), then `positions` int32 [m], `topk_ids` int32 [m, K], `topk_logprobs` [m, K]
(float16 or float32, LE), `tail` float32 [m].

Stored positions are the loss-masked targets only: position t (in the record's own frame) is
stored iff `assistant_mask[t + 1] == 1` and t is below the teacher's `max_length`. The
distribution at input position t predicts token t + 1. `topk_logprobs` are log-softmax values
over the aligned vocabulary (the first `vocab_columns` columns), sorted descending;
`tail = log(1 - sum(exp(topk_logprobs)))`, the log of the mass outside the top-k, computed
as a logsumexp over the other columns (so it stays accurate when the top-k hold almost all the
mass; -inf when nothing is left).
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

FORMAT = "distil_jax.teacher_topk.v1"
MAGIC = b"DJK1"
MANIFEST = "manifest.json"
SETTINGS = "settings.json"
UNIT_SUFFIX = ".array_record"
# Every record its own chunk, as in the data shards: the join reads records at random.
WRITER_OPTIONS = "group_size:1"
LOGPROB_DTYPES = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
RECORD_FORMAT = (
    "DJK1 magic, uint32 LE header length, JSON header {id, index, sha256, n, m, k, "
    "dtype}, int32 LE positions[m], int32 LE topk_ids[m, k], topk_logprobs[m, k] "
    "(dtype, LE), float32 LE tail[m]"
)


class StoreError(ValueError):
  """A store that cannot be used as asked: the message names the file."""


def token_hash(ids: np.ndarray) -> str:
  """sha256 hex digest of token ids as int32 little-endian bytes."""
  return hashlib.sha256(np.asarray(ids).astype("<i4").tobytes()).hexdigest()


def target_positions(assistant_mask: np.ndarray, max_length: int) -> np.ndarray:
  """Positions t < max_length whose next token t + 1 is trained on (mask[t + 1] == 1)."""
  mask = np.asarray(assistant_mask)
  limit = min(len(mask) - 1, max_length)
  return np.flatnonzero(mask[1 : limit + 1]).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class StoreRecord:
  """One example's teacher top-k: `m` stored positions, K entries each."""

  example_id: str
  index: int
  sha256: str
  num_tokens: int
  positions: np.ndarray  # int32 [m], ascending
  topk_ids: np.ndarray  # int32 [m, K]
  topk_logprobs: np.ndarray  # float16 or float32 [m, K], as stored
  tail: np.ndarray  # float32 [m]


def encode_record(rec: StoreRecord) -> bytes:
  m, k = rec.topk_ids.shape
  dtype = rec.topk_logprobs.dtype
  name = {v: n for n, v in LOGPROB_DTYPES.items()}.get(dtype.newbyteorder("<"))
  if name is None:
    raise ValueError(f"topk_logprobs dtype {dtype} is not one of {sorted(LOGPROB_DTYPES)}")
  if rec.positions.shape != (m,) or rec.topk_logprobs.shape != (m, k) or rec.tail.shape != (m,):
    raise ValueError(
        f"example {rec.example_id!r}: inconsistent shapes positions "
        f"{rec.positions.shape}, ids {rec.topk_ids.shape}, logprobs "
        f"{rec.topk_logprobs.shape}, tail {rec.tail.shape}"
    )
  header = json.dumps(
      {
          "id": rec.example_id,
          "index": int(rec.index),
          "sha256": rec.sha256,
          "n": int(rec.num_tokens),
          "m": int(m),
          "k": int(k),
          "dtype": name,
      }
  ).encode()
  return b"".join(
      (
          MAGIC,
          struct.pack("<I", len(header)),
          header,
          rec.positions.astype("<i4").tobytes(),
          rec.topk_ids.astype("<i4").tobytes(),
          rec.topk_logprobs.astype(LOGPROB_DTYPES[name]).tobytes(),
          rec.tail.astype("<f4").tobytes(),
      )
  )


def decode_record(record: bytes) -> StoreRecord:
  if record[:4] != MAGIC:
    raise ValueError(f"not a distil-jax teacher record (starts with {record[:4]!r})")
  (header_len,) = struct.unpack_from("<I", record, 4)
  h = json.loads(record[8 : 8 + header_len])
  m, k, dtype = h["m"], h["k"], LOGPROB_DTYPES[h["dtype"]]
  offset = 8 + header_len

  def take(dt, count):
    nonlocal offset
    out = np.frombuffer(record, dt, count=count, offset=offset)
    offset += count * np.dtype(dt).itemsize
    return out

  positions = take("<i4", m)
  ids = take("<i4", m * k).reshape(m, k)
  logprobs = take(dtype, m * k).reshape(m, k)
  tail = take("<f4", m)
  return StoreRecord(h["id"], h["index"], h["sha256"], h["n"], positions, ids, logprobs, tail)


# --- work units ---------------------------------------------------------------------------
def unit_ranges(num_examples: int, unit_size: int) -> list[tuple[int, int]]:
  """Contiguous `[start, end)` ranges of global record indices, `unit_size` examples each."""
  if unit_size < 1:
    raise ValueError(f"unit_size must be >= 1, got {unit_size}")
  return [(s, min(s + unit_size, num_examples)) for s in range(0, num_examples, unit_size)]


def unit_name(unit: int) -> str:
  return f"unit-{unit:05d}"


def unit_done(store_dir: Path, unit: int) -> bool:
  """A unit is done once its sidecar exists and its file has the size the sidecar states."""
  sidecar = store_dir / f"{unit_name(unit)}.json"
  if not sidecar.is_file():
    return False
  info = json.loads(sidecar.read_text())
  path = store_dir / info["path"]
  return path.is_file() and path.stat().st_size == info["bytes"]


class UnitWriter:
  """Writes one work unit under a temporary name; `finish()` renames it and writes the sidecar.

  A unit left unfinished (a killed process) is redone from its start by the next run: its
  temporary file is overwritten, so at most one unit per process is computed twice.
  """

  def __init__(self, store_dir: Path, unit: int, start: int, end: int):
    self._dir, self._unit, self._start, self._end = Path(store_dir), unit, start, end
    self._name = f"{unit_name(unit)}{UNIT_SUFFIX}"
    self._tmp = self._dir / f".{self._name}.tmp-{os.getpid()}"
    for stale in self._dir.glob(f".{self._name}.tmp-*"):  # a killed run's; the unit is ours
      stale.unlink(missing_ok=True)
    self._writer = ArrayRecordWriter(str(self._tmp), WRITER_OPTIONS)
    self._next = start
    self.positions = 0
    self.tokens = 0
    self.payload_bytes = 0

  def write(self, rec: StoreRecord) -> None:
    if rec.index != self._next:
      raise ValueError(f"unit {self._unit}: record index {rec.index}, expected {self._next}")
    record = encode_record(rec)
    self._writer.write(record)
    self.payload_bytes += len(record)
    self._next += 1
    self.positions += int(rec.positions.shape[0])
    self.tokens += int(rec.num_tokens)

  def finish(self) -> dict:
    if self._next != self._end:
      raise ValueError(f"unit {self._unit}: wrote up to {self._next}, expected {self._end}")
    self._writer.close()
    os.replace(self._tmp, self._dir / self._name)
    info = {
        "unit": self._unit,
        "path": self._name,
        "start": self._start,
        "end": self._end,
        "positions": self.positions,
        "tokens": self.tokens,
        "payload_bytes": self.payload_bytes,
        "bytes": (self._dir / self._name).stat().st_size,
    }
    write_json_atomically(self._dir / f"{unit_name(self._unit)}.json", info)
    return info

  def abandon(self) -> None:
    self._writer.close()
    self._tmp.unlink(missing_ok=True)


def write_json_atomically(path: Path, obj: dict) -> None:
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
  os.replace(tmp, path)


def sum_unit_counts(store_dir: Path, num_units: int, suffix: str) -> dict[str, int]:
  """The sums of the `<unit>.<suffix>.json` counts each unit wrote beside its shard (a unit
  finished by a killed run before its counts were written contributes none)."""
  total: dict[str, int] = {}
  for u in range(num_units):
    path = Path(store_dir) / f"{unit_name(u)}.{suffix}.json"
    if path.is_file():
      for k, v in json.loads(path.read_text()).items():
        total[k] = total.get(k, 0) + v
  return total


def begin_store(store_dir: Path, settings: dict) -> None:
  """Records `settings` in a new store, or checks that an existing one was begun with them."""
  store_dir.mkdir(parents=True, exist_ok=True)
  path = store_dir / SETTINGS
  if path.is_file():
    old = json.loads(path.read_text())
    changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if changed:
      diffs = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
      raise StoreError(
          f"{path}: this store was begun with other settings ({diffs}); "
          "use a new output directory"
      )
    return
  write_json_atomically(path, settings)


def finish_store(store_dir: Path, num_units: int) -> dict:
  """Writes `manifest.json` from the settings and every unit's sidecar; all must be done."""
  settings = json.loads((store_dir / SETTINGS).read_text())
  units = []
  for u in range(num_units):
    if not unit_done(store_dir, u):
      raise StoreError(f"{store_dir}: unit {u} is not finished; cannot write the manifest")
    units.append(json.loads((store_dir / f"{unit_name(u)}.json").read_text()))
  positions = sum(u["positions"] for u in units)
  stored_bytes = sum(u["bytes"] for u in units)
  payload = sum(u["payload_bytes"] for u in units)
  manifest = {
      "format": FORMAT,
      "record_format": RECORD_FORMAT,
      **settings,
      "counts": {
          "examples": units[-1]["end"] if units else 0,
          "tokens": sum(u["tokens"] for u in units),
          "stored_positions": positions,
          "bytes": stored_bytes,
          "payload_bytes": payload,
      },
      # On disk (zstd per record; small files have a fixed overhead) and before compression.
      "bytes_per_stored_token": round(stored_bytes / max(positions, 1), 2),
      "payload_bytes_per_stored_token": round(payload / max(positions, 1), 2),
      "units": units,
  }
  write_json_atomically(store_dir / MANIFEST, manifest)
  return manifest


def read_manifest(store_dir: str | os.PathLike) -> dict:
  path = Path(store_dir) / MANIFEST
  if not path.is_file():
    hint = (
        " (unfinished: rerun `distil-jax teacher-logits` to resume)"
        if (Path(store_dir) / SETTINGS).is_file()
        else ""
    )
    raise StoreError(f"{path}: no teacher store manifest{hint}")
  manifest = json.loads(path.read_text())
  if manifest.get("format") != FORMAT:
    raise StoreError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
  return manifest


class TeacherStore:
  """Random access to a finished store by global record index (picklable; readers open lazily)."""

  def __init__(self, store_dir: str | os.PathLike):
    self.dir = Path(store_dir)
    self.manifest = read_manifest(self.dir)
    self.top_k = int(self.manifest["top_k"])
    self._units = self.manifest["units"]
    self._starts = [u["start"] for u in self._units]
    self._readers: dict[int, ArrayRecordReader] = {}

  def __len__(self) -> int:
    return int(self.manifest["counts"]["examples"])

  def path_of(self, index: int) -> Path:
    return self.dir / self._units[self._unit_of(index)]["path"]

  def _unit_of(self, index: int) -> int:
    if not 0 <= index < len(self):
      raise IndexError(f"{self.dir}: record index {index} outside [0, {len(self)})")
    return bisect.bisect_right(self._starts, index) - 1

  def __getitem__(self, index: int) -> StoreRecord:
    u = self._unit_of(index)
    reader = self._readers.get(u)
    if reader is None:
      reader = self._readers[u] = ArrayRecordReader(str(self.dir / self._units[u]["path"]))
    rec = decode_record(reader.read([index - self._units[u]["start"]])[0])
    if rec.index != index:
      raise StoreError(
          f"{self.path_of(index)}: holds record index {rec.index} where "
          f"{index} belongs (a corrupt or hand-assembled store)"
      )
    return rec

  def __getstate__(self):
    return {**self.__dict__, "_readers": {}}

  def close(self) -> None:
    for reader in self._readers.values():
      reader.close()
    self._readers.clear()
