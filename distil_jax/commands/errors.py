"""Expected failures (a bad input file, a missing or unreadable checkpoint, a full disk) end a command
with one line naming the command and the cause, and a non-zero exit, instead of a traceback.
`DISTIL_JAX_TRACEBACK=1` shows the traceback anyway, for bug reports."""

from __future__ import annotations

import os
import sys
from typing import Callable

EXPECTED = (OSError, ValueError, KeyError)
EXIT_BAD_INPUT = 2


def one_line(command: str, body: Callable[[], int]) -> int:
  try:
    return body()
  except EXPECTED as e:
    if os.environ.get("DISTIL_JAX_TRACEBACK"):
      raise
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f"distil-jax {command}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT
