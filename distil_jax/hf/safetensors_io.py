"""A streaming safetensors reader and writer.

Reading uses `os.pread` into a fresh buffer rather than a memory map, so only the tensor
being converted is resident; writing emits the header first and then one tensor at a
time. Errors name the file and the tensor.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Iterable, Iterator

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
CODES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
  """A checkpoint that cannot be read or does not fit the model; the message says where."""


class SafetensorsFile:
  """Header of one .safetensors file; `read(name)` loads a single tensor."""

  def __init__(self, path: str):
    self.path = path
    try:
      size = os.path.getsize(path)
      with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
          raise CheckpointError(f"{path}: file too short for a safetensors header")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > min(_MAX_HEADER, size - 8):
          raise CheckpointError(
              f"{path}: corrupt safetensors header (length {header_len} "
              f"in a file of {size} bytes)"
          )
        header = json.loads(f.read(header_len))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise CheckpointError(f"{path}: corrupt safetensors header: {e}") from None
    except OSError as e:
      raise CheckpointError(f"{path}: cannot read: {e}") from None
    self.metadata = header.pop("__metadata__", {}) or {}
    self._data_start = 8 + header_len
    self.tensors: dict[str, dict] = {}
    for name, info in header.items():
      try:
        dtype = DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        shape = tuple(int(s) for s in info["shape"])
      except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: tensor {name!r}: malformed header entry {info}") from None
      if end - start != dtype.itemsize * int(np.prod(shape)) or self._data_start + end > size:
        raise CheckpointError(
            f"{path}: tensor {name!r}: data offsets {start}..{end} do not "
            f"match shape {shape} {info['dtype']} or the file size {size}"
        )
      self.tensors[name] = {"dtype": dtype, "shape": shape, "offsets": (start, end)}

  def read(self, name: str) -> np.ndarray:
    info = self.tensors[name]
    start, end = info["offsets"]
    buf = np.empty(end - start, np.uint8)
    fd = os.open(self.path, os.O_RDONLY)
    try:
      view, pos = memoryview(buf), 0
      while pos < len(buf):
        n = os.preadv(fd, [view[pos:]], self._data_start + start + pos)
        if n == 0:
          raise CheckpointError(f"{self.path}: tensor {name!r}: unexpected end of file")
        pos += n
    finally:
      os.close(fd)
    return buf.view(info["dtype"]).reshape(info["shape"])


def write_safetensors(
    path: str,
    specs: list[tuple[str, tuple[int, ...], np.dtype]],
    arrays: Iterable[np.ndarray],
    metadata: dict[str, str] | None = None,
):
  """Write tensors named in `specs` (in order) from the `arrays` stream, one at a time."""
  header, offset = {}, 0
  for name, shape, dtype in specs:
    nbytes = np.dtype(dtype).itemsize * int(np.prod(shape))
    header[name] = {
        "dtype": CODES[np.dtype(dtype)],
        "shape": list(shape),
        "data_offsets": [offset, offset + nbytes],
    }
    offset += nbytes
  header["__metadata__"] = metadata or {"format": "pt"}
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    count = 0
    for (name, shape, dtype), array in zip(specs, arrays):
      if tuple(array.shape) != tuple(shape) or array.dtype != np.dtype(dtype):
        raise CheckpointError(
            f"{path}: tensor {name!r} is {array.shape} {array.dtype}, "
            f"planned {shape} {np.dtype(dtype)}"
        )
      f.write(np.ascontiguousarray(array).tobytes())
      count += 1
    if count != len(specs):
      raise CheckpointError(f"{path}: {len(specs) - count} planned tensors were never written")
    f.flush()
    os.fsync(f.fileno())


def iter_files(paths: Iterable[str]) -> Iterator[SafetensorsFile]:
  for p in paths:
    yield SafetensorsFile(p)
