"""What `distil-jax train` checks and holds in its workdir before it changes anything there.

- `check_resume`: a workdir with checkpoints is resumed only by a model of the same shapes; the
  check reads `model_config.json` and the latest step's layout, before config files are rewritten.
- `WorkdirLock`: one `train` per workdir. An `flock` on `<workdir>/.lock`: the kernel releases it
  when its process dies (kill -9 included), so a stale lock is simply taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

# Fields that give the parameters their shapes: a checkpoint restores only into the same ones.
SHAPE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "tie_word_embeddings",
)


class WorkdirError(RuntimeError):
  pass


def finished_steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def check_resume(workdir: str, model_cfg, config_file: str) -> None:
  """Raises WorkdirError (one line) when the workdir's checkpoints cannot be resumed with `model_cfg`."""
  steps = finished_steps(workdir)
  if not steps:
    return
  path = os.path.join(workdir, config_file)
  try:
    with open(path) as f:
      saved = json.load(f)
  except FileNotFoundError:
    raise WorkdirError(
        f"{workdir} holds checkpoints (steps {steps}) but no {config_file}: cannot tell "
        "which model wrote them; use a new workdir"
    ) from None
  except (OSError, ValueError) as e:
    raise WorkdirError(
        f"{path}: unreadable ({e}); the checkpoints beside it cannot be resumed safely"
    ) from None
  changed = [
      f"{k} {saved.get(k)} -> {getattr(model_cfg, k)}"
      for k in SHAPE_FIELDS
      if saved.get(k) != getattr(model_cfg, k)
  ]
  if changed:
    raise WorkdirError(
        f"{workdir} holds checkpoints of another model ({', '.join(changed)}); resume with the "
        "same model settings or use a new workdir (nothing was changed)"
    )


class WorkdirLock:
  """`with WorkdirLock(workdir):` one holder at a time; raises WorkdirError naming the holder."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, ".lock")
    self._fd: int | None = None
    self.took_over: str = ""  # who held it before, when that process died without releasing it

  def __enter__(self) -> "WorkdirLock":
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 4096).decode(errors="replace").strip()
      os.close(fd)
      raise WorkdirError(
          f"{os.path.dirname(self.path)} is in use by another `distil-jax train` ({holder or 'unknown'});"
          " wait for it to finish or stop it"
      ) from None
    self.took_over = os.read(fd, 4096).decode(errors="replace").strip()
    os.ftruncate(fd, 0)
    os.pwrite(
        fd,
        f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(),
        0,
    )
    self._fd = fd
    return self

  def __exit__(self, *exc) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)
      os.close(self._fd)  # closing releases the flock
      self._fd = None
