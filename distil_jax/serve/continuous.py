"""Continuous batching for the server: rows join the running decode between steps.

One thread owns the device. Each turn it moves waiting rows into free slots of a `SlotDecoder`
(a prefill each), runs one decode step for every busy slot, and hands finished rows back to the
event loop. A row that cannot be admitted (it fails its prefill) fails alone. Same interface as
the static `Batcher`.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time

from distil_jax.generate.engine import Generator
from distil_jax.generate.slots import SlotDecoder
from distil_jax.serve.batcher import BatchStats, _set
from distil_jax.serve.json_mode import json_chooser
from distil_jax.serve.protocol import Row
from distil_jax.serve.responses import Answer


class ContinuousBatcher:

  def __init__(
      self, generator: Generator, *, slots: int = 32, max_len: int, stream_interval_s: float = 0.05
  ):
    self.generator = generator
    self.decoder = SlotDecoder(generator, slots=slots, max_len=max_len)
    self.stats = BatchStats()
    self._waiting: queue.Queue = queue.Queue()
    self._closing = threading.Event()
    self._thread: threading.Thread | None = None
    self._progress: dict[int, list] = {}  # id(future) -> [on_tokens, loop, last report]
    self.stream_interval_s = stream_interval_s  # streamed rows hear of new tokens this often

  @property
  def queue_depth(self) -> int:
    return self._waiting.qsize()

  def start(self) -> None:
    self._thread = threading.Thread(target=self._run, name="distil-jax-decode", daemon=True)
    self._thread.start()

  async def stop(self) -> None:
    self._closing.set()
    if self._thread is not None:
      await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

  async def submit(self, rows: list[Row]) -> list[Answer]:
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in rows]
    for row, future in zip(rows, futures):
      self._waiting.put((row, future, loop))
    return list(await asyncio.gather(*futures))

  def submit_streaming(self, row: Row, on_tokens) -> asyncio.Future:
    """Like `submit` for one row, and `on_tokens(tokens so far)` is called on the event loop
    after each decode step while the row runs."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    self._progress[id(future)] = [on_tokens, loop, None]
    future.add_done_callback(lambda f: self._progress.pop(id(f), None))
    self._waiting.put((row, future, loop))
    return future

  def _report_progress(self) -> None:
    """The first token at once, then at most every `stream_interval_s`: each report costs the
    event loop a detokenisation and a chunk, which would otherwise slow every decode step."""
    now = time.monotonic()
    for busy in list(self.decoder.busy.values()):
      hook = self._progress.get(id(busy.request[0][1]))
      if hook is None or hook[1].is_closed():
        continue
      if hook[2] is None or now - hook[2] >= self.stream_interval_s:
        hook[2] = now
        hook[1].call_soon_threadsafe(hook[0], list(busy.tokens))

  def _resolve(self, entry, *, result=None, exception=None) -> None:
    _, future, loop = entry
    if not loop.is_closed():
      loop.call_soon_threadsafe(lambda: _set(future, result=result, exception=exception))

  def _admit_waiting(self, block: bool) -> None:
    while self.decoder.free:
      try:
        entry = self._waiting.get(timeout=0.05) if block else self._waiting.get_nowait()
      except queue.Empty:
        return
      block = False
      row, future, _ = entry
      if future.done():  # the client went away while it waited
        continue
      try:
        scores = (
            self.generator.score([row.prompt], num_top=row.prompt_logprobs)[0]
            if row.prompt_logprobs
            else None
        )
        finished = self.decoder.admit(
            (entry, scores),
            row.prompt,
            max_new=row.max_new_tokens,
            sampling=row.sampling,
            seed=row.seed,
            salt=row.salt,
            num_logprobs=row.num_logprobs,
            chooser=json_chooser(row),
        )
      except Exception as e:  # noqa: BLE001 - this row fails alone
        self._resolve(entry, exception=e)
        continue
      self.stats.rows += 1
      self._finish(finished)
      self._report_progress()  # the first token goes out before the next step

  def _finish(self, finished) -> None:
    for (entry, scores), completion in finished:
      self.stats.new_tokens += len(completion.tokens)
      self._resolve(entry, result=Answer(completion, scores))

  def _run(self) -> None:
    while not self._closing.is_set():
      self._admit_waiting(block=not self.decoder.busy)
      if not self.decoder.busy:
        continue
      live = len(self.decoder.busy)
      try:
        finished = self.decoder.step()
      except Exception as e:  # noqa: BLE001 - the rows in flight fail, not the server
        for busy in self.decoder.busy.values():
          self._resolve(busy.request[0], exception=e)
        # The step may have consumed the donated cache: start from a fresh one.
        self.decoder = SlotDecoder(
            self.generator, slots=self.decoder.slots, max_len=self.decoder.max_len
        )
        continue
      self.stats.batches += 1
      self.stats.largest_batch = max(self.stats.largest_batch, live)
      self._finish(finished)
      self._report_progress()
