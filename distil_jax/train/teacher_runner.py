"""Runs a teacher's top-k over prepared documents for `distil-jax teacher-logits`: packs them in
record order into rows (next fit, segment ids, positions restarting per document), gathers each
row's trained positions into a bucketed number of slots, runs `teacher_topk.jitted_topk`, and
hands back one teacher-store record per document. With several processes every process runs the
same shapes.
"""

from __future__ import annotations

import time

import numpy as np


class UsageError(ValueError):
  """Arguments that cannot work together (e.g. rows that do not divide over the mesh)."""


class TeacherRunner:
  """Packs documents into rows, runs the jitted top-k, hands back one store record per document."""

  def __init__(self, model_and_mesh, batch_size: int, chunk: int, settings: dict):
    from flax import nnx

    model, mesh = model_and_mesh
    self.graphdef, self.params = nnx.split(model)
    self.mesh = mesh
    self.rows, self.length = batch_size, settings["max_length"]
    self.k, self.vocab_columns = settings["top_k"], settings["vocab_columns"]
    self.chunk = min(chunk, self.length)
    self.logprob_dtype = np.dtype(settings["logprob_dtype"])
    self.tokens = 0
    self._step_times: list[tuple[float, int]] = []

  def records(self, source, start: int, end: int):
    """Store records of `[start, end)`, in order."""
    from distil_jax.data import shards

    rows: list[list] = []  # each row: [(index, example_id, ids, mask, offset)]
    fill = self.length
    for index in range(start, end):
      example_id, ids, mask = shards.decode_record(source[index])
      n = min(len(ids), self.length)
      if fill + n > self.length:
        if len(rows) == self.rows:
          yield from self._step(rows)
          rows = []
        rows.append([])
        fill = 0
      rows[-1].append((index, example_id, ids, mask, fill))
      fill += n
    if rows:
      yield from self._step(rows)

  def _step(self, rows):
    from distil_jax.data import teacher_store

    B, L = self.rows, self.length
    ids_BxL = np.zeros((B, L), np.int32)
    pos_BxL = np.zeros((B, L), np.int32)
    seg_BxL = np.zeros((B, L), np.int32)
    targets = []  # per document: (row, its target positions in its own frame)
    for r, docs in enumerate(rows):
      for s, (_, _, ids, mask, offset) in enumerate(docs, start=1):
        n = min(len(ids), L)
        ids_BxL[r, offset : offset + n] = ids[:n]
        pos_BxL[r, offset : offset + n] = np.arange(n)
        seg_BxL[r, offset : offset + n] = s
        targets.append((r, offset, teacher_store.target_positions(mask, L)))
    per_row = np.zeros(B, np.int64)
    for r, _, t in targets:
      per_row[r] += len(t)
    slots = self._bucket(self._agree(int(per_row.max())))
    gather_BxP = np.zeros((B, slots), np.int32)
    fill = np.zeros(B, np.int64)
    where = []
    for r, offset, t in targets:
      gather_BxP[r, fill[r] : fill[r] + len(t)] = offset + t
      where.append((r, fill[r], fill[r] + len(t)))
      fill[r] += len(t)
    t0 = time.perf_counter()
    ids, logprobs, tail = self._compute(ids_BxL, pos_BxL, seg_BxL, gather_BxP)
    tokens = int((seg_BxL > 0).sum())
    self._step_times.append((time.perf_counter() - t0, tokens))
    self.tokens += tokens
    docs = [d for row in rows for d in row]
    for (index, example_id, doc_ids, _, _), (r, a, b), (_, _, t) in zip(docs, where, targets):
      yield teacher_store.StoreRecord(
          example_id=example_id,
          index=index,
          sha256=teacher_store.token_hash(doc_ids),
          num_tokens=len(doc_ids),
          positions=t,
          topk_ids=ids[r, a:b],
          topk_logprobs=logprobs[r, a:b].astype(self.logprob_dtype),
          tail=tail[r, a:b],
      )

  def _bucket(self, needed: int) -> int:
    """Slots per row: `chunk` times a power of two, at most the row length (few compiles)."""
    most = -(-self.length // self.chunk)
    chunks = 1
    while chunks * self.chunk < needed and chunks < most:
      chunks *= 2
    return min(chunks, most) * self.chunk

  def _agree(self, needed: int) -> int:
    """Every process must run the same shapes: the largest need of all of them."""
    import jax

    if jax.process_count() == 1:
      return needed
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.array([1, needed], np.int32))[:, 1]))

  def drain_peers(self) -> None:
    """Multi-process: keep stepping on empty rows while another process still has work (the
    jitted step is one program over every process's devices)."""
    import jax

    if jax.process_count() == 1:
      return
    from jax.experimental import multihost_utils

    while True:
      flags = multihost_utils.process_allgather(np.array([0, 0], np.int32))
      if not flags[:, 0].any():
        return
      slots = self._bucket(int(flags[:, 1].max()))
      B, L = self.rows, self.length
      zeros = np.zeros((B, L), np.int32)
      self._compute(zeros, zeros, zeros, np.zeros((B, slots), np.int32))

  def _compute(self, ids_BxL, pos_BxL, seg_BxL, gather_BxP):
    import jax
    from jax.sharding import NamedSharding, PartitionSpec
    from distil_jax.sharding import logical_to_spec, use_mesh
    from distil_jax.train.teacher_topk import jitted_topk

    n = jax.process_count()
    B = ids_BxL.shape[0] * n  # the global batch: every process's rows
    spec = logical_to_spec(("batch", None), shape=(B, 1), mesh=self.mesh)
    sharding = NamedSharding(self.mesh, spec)
    if n == 1:
      put = lambda x: jax.device_put(x, sharding)  # noqa: E731
    else:
      if spec == PartitionSpec(None, None) and B > ids_BxL.shape[0]:
        raise UsageError(
            f"{B} rows (--batch_size x processes) do not divide over the mesh's "
            f"data axes {dict(self.mesh.shape)}"
        )
      put = lambda x: jax.make_array_from_process_local_data(sharding, x)  # noqa: E731
    with use_mesh(self.mesh):
      out = jitted_topk(
          self.graphdef,
          self.params,
          put(ids_BxL),
          put(pos_BxL),
          put(seg_BxL),
          put(gather_BxP),
          k=self.k,
          vocab_columns=self.vocab_columns,
          chunk=self.chunk,
      )
    if n == 1:
      return tuple(np.asarray(x) for x in out)
    from jax.experimental import multihost_utils

    return tuple(
        np.asarray(x)
        for x in multihost_utils.global_array_to_host_local_array(
            out, self.mesh, tuple(PartitionSpec(*spec, *([None] * (x.ndim - 2))) for x in out)
        )
    )

  def steady_rate(self) -> float | None:
    later = self._step_times[1:]
    if not later:
      return None
    return round(sum(t for _, t in later) / max(sum(s for s, _ in later), 1e-9), 1)
