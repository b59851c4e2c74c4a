"""Live per-stage progress on stderr: done/total, rate, ETA, tokens spent.

On a terminal one line is redrawn in place; otherwise a line is printed every `interval_s`.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


class ProgressDisplay:

  def __init__(
      self, *, interval_s: float, tokens_spent: Callable[[], int], stream: TextIO = sys.stderr
  ):
    self.interval_s = interval_s
    self._tokens_spent = tokens_spent
    self._stream = stream
    self._tty = stream.isatty()
    self._stage, self._total, self._done = "", 0, 0
    self._started = self._last_draw = 0.0

  def start(self, stage: str, total: int) -> None:
    self._stage, self._total, self._done = stage, total, 0
    self._started = time.monotonic()
    self._last_draw = 0.0
    self._draw(force=True)

  def advance(self, n: int = 1) -> None:
    self._done += n
    self._draw(force=False)

  def finish(self) -> None:
    self._draw(force=True)
    if self._tty:
      self._stream.write("\n")
      self._stream.flush()

  def _draw(self, *, force: bool) -> None:
    now = time.monotonic()
    if not force and now - self._last_draw < self.interval_s:
      return
    self._last_draw = now
    elapsed = max(now - self._started, 1e-9)
    rate = self._done / elapsed
    eta = (self._total - self._done) / rate if rate > 0 else float("inf")
    eta_text = f"{eta:6.0f}s" if eta != float("inf") else "     ?"
    line = (
        f"[curate] {self._stage:<16} {self._done:>7}/{self._total:<7} {rate:8.1f}/s "
        f"ETA {eta_text}  tokens {self._tokens_spent():,}"
    )
    self._stream.write(("\r" + line) if self._tty else line + "\n")
    self._stream.flush()
