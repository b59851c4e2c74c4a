"""Token buckets for requests/min and tokens/min limits of a teacher endpoint."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
  """Refills at `per_minute / 60` units per second up to one minute's worth; 0 means unlimited.

  Waiters are served in arrival order (a lock), so a large request is not starved by small ones.
  The balance may go negative after `charge`, when a response used more than was reserved.
  """

  def __init__(self, per_minute: float, *, clock=time.monotonic):
    self.unlimited = per_minute <= 0
    self.capacity = per_minute
    self.rate_per_s = per_minute / 60.0
    self._level = per_minute
    self._clock = clock
    self._stamp = clock()
    self._lock = asyncio.Lock()

  def _refill(self) -> None:
    now = self._clock()
    self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate_per_s)
    self._stamp = now

  async def acquire(self, amount: float) -> None:
    if self.unlimited:
      return
    amount = min(amount, self.capacity)  # a request bigger than the bucket would wait forever
    async with self._lock:
      self._refill()
      while self._level < amount:
        await asyncio.sleep((amount - self._level) / self.rate_per_s)
        self._refill()
      self._level -= amount

  def charge(self, amount: float) -> None:
    """Adjusts the balance once the real cost is known (negative refunds an over-reservation)."""
    if not self.unlimited:
      self._refill()
      self._level = min(self.capacity, self._level - amount)
