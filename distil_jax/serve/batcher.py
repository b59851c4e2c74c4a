"""Request batching: rows from concurrent requests are gathered into one generate call.

The event loop queues rows; one worker takes the first waiting row, waits up to `max_wait_s` for
more (or none, if the batch fills), and runs the batch on a single generation thread, so the device
sees one call at a time. While a batch runs, new rows pile up and form the next batch.

Rows are validated against the generator's limits before they are queued (see `protocol`); should a
batch still fail, each of its rows is run again alone, so only the row at fault fails.
JSON-mode rows (the host picks their tokens) form a group of their own, stepped on a `SlotDecoder`
after the batch's free-text rows have been answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import ThreadPoolExecutor

from distil_jax.generate.engine import Completion, Generator, _bucket
from distil_jax.generate.slots import SlotDecoder
from distil_jax.serve.json_mode import json_chooser
from distil_jax.serve.protocol import Row
from distil_jax.serve.responses import Answer


@dataclasses.dataclass
class BatchStats:
  batches: int = 0
  rows: int = 0
  largest_batch: int = 0
  new_tokens: int = 0


class Batcher:

  def __init__(self, generator: Generator, *, max_batch: int = 32, max_wait_s: float = 0.01):
    self.generator = generator
    self.max_batch = max_batch
    self.max_wait_s = max_wait_s
    self.stats = BatchStats()
    self._queue: asyncio.Queue | None = None
    self._worker: asyncio.Task | None = None
    self._executor = ThreadPoolExecutor(1, thread_name_prefix="distil-jax-generate")

  def start(self) -> None:
    """Call from inside the serving event loop."""
    self._queue = asyncio.Queue()
    self._worker = asyncio.get_running_loop().create_task(self._run())

  async def stop(self) -> None:
    if self._worker is not None:
      self._worker.cancel()
      try:
        await self._worker
      except asyncio.CancelledError:
        pass
    self._executor.shutdown(wait=True)

  @property
  def queue_depth(self) -> int:
    return self._queue.qsize() if self._queue is not None else 0

  async def submit(self, rows: list[Row]) -> list[Answer]:
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in rows]
    for row, future in zip(rows, futures):
      self._queue.put_nowait((row, future))
    return list(await asyncio.gather(*futures))

  async def _gather(self) -> list:
    loop = asyncio.get_running_loop()
    batch = [await self._queue.get()]
    deadline = loop.time() + self.max_wait_s
    while len(batch) < self.max_batch:
      if not self._queue.empty():
        batch.append(self._queue.get_nowait())
        continue
      remaining = deadline - loop.time()
      if remaining <= 0:
        break
      try:
        batch.append(await asyncio.wait_for(self._queue.get(), remaining))
      except asyncio.TimeoutError:
        break
    return [(row, f) for row, f in batch if not f.done()]  # drop rows whose client left

  async def _run(self) -> None:
    while True:
      batch = await self._gather()
      # Free text first, in one call: its answers do not wait for JSON mode's stepped decode.
      for hosted in (False, True):
        group = [(r, f) for r, f in batch if (r.json_table is not None) == hosted]
        if group:
          await self._answer(group)

  async def _answer(self, batch) -> None:
    """Rows of one kind (free text or JSON mode) in one generation."""
    loop = asyncio.get_running_loop()
    rows = [row for row, _ in batch]
    try:
      answers = await loop.run_in_executor(self._executor, self._generate, rows)
    except Exception as e:  # noqa: BLE001 - the batch fails, not the server
      if len(batch) == 1:
        _set(batch[0][1], exception=e)
      else:  # find the row at fault: each runs again alone
        await self._one_by_one(batch)
      return
    for (_, future), answer in zip(batch, answers):
      _set(future, result=answer)

  async def _one_by_one(self, batch) -> None:
    loop = asyncio.get_running_loop()
    for row, future in batch:
      try:
        [answer] = await loop.run_in_executor(self._executor, self._generate, [row])
      except Exception as e:  # noqa: BLE001 - this row fails alone
        _set(future, exception=e)
      else:
        _set(future, result=answer)

  def _generate(self, rows: list[Row]) -> list[Answer]:
    hosted = rows[0].json_table is not None  # `_answer` never mixes the two kinds
    completions = self._json_mode(rows) if hosted else self._free_text(rows)
    scored = [i for i, r in enumerate(rows) if r.prompt_logprobs]
    scores = dict(
        zip(
            scored,
            self.generator.score(
                [rows[i].prompt for i in scored],
                num_top=max((rows[i].prompt_logprobs for i in scored), default=1),
            ),
        )
    )
    self.stats.batches += 1
    self.stats.rows += len(rows)
    self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
    self.stats.new_tokens += sum(len(c.tokens) for c in completions)
    return [Answer(c, scores.get(i)) for i, c in enumerate(completions)]

  def _free_text(self, rows: list[Row]) -> list[Completion]:
    return self.generator.generate(
        [r.prompt for r in rows],
        max_new_tokens=[r.max_new_tokens for r in rows],
        sampling=[r.sampling for r in rows],
        seed=[r.seed for r in rows],
        salt=[r.salt for r in rows],
        num_logprobs=max(r.num_logprobs for r in rows),
    )

  def _json_mode(self, rows: list[Row]) -> list[Completion]:
    """JSON-mode rows step by step on a `SlotDecoder` sized for them (the host picks each token;
    the one-call decode loop of `generate` cannot stop for it). Same tokens as `--continuous`."""
    longest = max(len(r.prompt) + r.max_new_tokens for r in rows)
    positions = self.generator.config.max_position_embeddings
    decoder = SlotDecoder(
        self.generator, slots=_bucket(len(rows), 1), max_len=min(_bucket(longest, 16), positions)
    )
    done = {}
    for i, r in enumerate(rows):
      kw = dict(sampling=r.sampling, seed=r.seed, salt=r.salt, num_logprobs=r.num_logprobs)
      done.update(
          decoder.admit(i, r.prompt, max_new=r.max_new_tokens, chooser=json_chooser(r), **kw)
      )
    while decoder.busy:
      done.update(decoder.step())
    return [done[i] for i in range(len(rows))]


def _set(future: asyncio.Future, *, result=None, exception=None) -> None:
  if not future.done():  # the client may have gone
    if exception is not None:
      future.set_exception(exception)
    else:
      future.set_result(result)
