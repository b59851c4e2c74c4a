"""Temporary output directories that carry their writer's pid, so the next run can remove the ones
a killed writer (kill -9) left behind: `<output>.tmp-<pid>-<random>` beside the output.

Liveness is checked on this host: a temporary of a writer on another host sharing the filesystem is
removed only when a pid of that number is not running here, which is why only the outputs' own
writers call this, for their own output name."""

from __future__ import annotations

import os
import shutil
import uuid


def temporary_name(output: str, *, hidden: bool = False) -> str:
  """A fresh temporary path beside `output` (`.name.tmp-...` when `hidden`)."""
  head, name = os.path.split(os.path.abspath(output))
  return os.path.join(
      head, f"{'.' if hidden else ''}{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  )


def remove_abandoned(output: str, *, hidden: bool = False) -> list[str]:
  """Removes the temporaries of `output` whose writer is gone; returns their paths."""
  head, name = os.path.split(os.path.abspath(output))
  prefix = f"{'.' if hidden else ''}{name}.tmp-"
  removed = []
  if not os.path.isdir(head):
    return removed
  for entry in os.listdir(head):
    pid = entry[len(prefix) :].split("-")[0] if entry.startswith(prefix) else ""
    if pid.isdigit() and not _alive(int(pid)):
      shutil.rmtree(os.path.join(head, entry), ignore_errors=True)
      removed.append(os.path.join(head, entry))
  return removed


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process
    return True
  return True
