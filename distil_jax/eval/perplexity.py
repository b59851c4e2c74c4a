"""Held-out loss and perplexity of a model on prepared shards (`distil-jax prepare` output).

Every example is read once, in manifest order, one document a row (truncated to `seq_len`), so the
figure does not depend on packing or shuffling. The loss is the training loss without a gradient:
`chunked_cross_entropy` over the tokens the shards mark (assistant turns), in float32:

    loss = sum_t m_t * (logsumexp(z_t) - z_t[y_t]) / sum_t m_t,   perplexity = exp(loss)

where z_t are the logits predicting token y_t = ids[t+1] and m_t = mask[t+1]. `per_example` keeps
each example's [sum_t m_t * nll_t, sum_t m_t] (in the shards' order), so a report can resample
examples for an interval on the perplexity. Batches are placed
on the mesh's batch axes; the model's own shardings (from `from_pretrained(mesh=...)`) stay as they are.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from distil_jax.train import positions as loss_positions


def read_documents(data_dir: str, seq_len: int):
  """(ids, target_ids, loss_mask) per example, in manifest order."""
  from distil_jax.data import shards

  manifest = shards.read_manifest(data_dir)
  for shard in manifest["shards"]:
    if not shard["examples"]:
      continue
    for record in shards.read_records(Path(data_dir) / shard["path"]):
      _, ids, mask = shards.decode_record(record)
      ids, mask = ids[:seq_len], mask[:seq_len]
      targets = np.zeros_like(ids)
      targets[:-1] = ids[1:]
      loss_mask = np.zeros(ids.shape, np.float32)
      loss_mask[:-1] = mask[1:]
      yield ids, targets, loss_mask


def _row_bucket(n: int, seq_len: int) -> int:
  return min(seq_len, max(16, 1 << max(0, n - 1).bit_length()))


def _batches(docs, batch_size: int, seq_len: int, rows_multiple: int):
  pending = []
  for doc in docs:
    pending.append(doc)
    if len(pending) == batch_size:
      yield _stack(pending, batch_size, seq_len)
      pending = []
  if pending:  # the tail: padded with empty rows (mask 0), so nothing is dropped
    yield _stack(pending, -(-len(pending) // rows_multiple) * rows_multiple, seq_len)


def _stack(docs, rows: int, seq_len: int) -> dict[str, np.ndarray]:
  length = _row_bucket(max(len(d[0]) for d in docs), seq_len)
  batch = {
      "input_ids": np.zeros((rows, length), np.int32),
      "target_ids": np.zeros((rows, length), np.int32),
      "loss_mask": np.zeros((rows, length), np.float32),
      "segment_ids": np.zeros((rows, length), np.int32),
      "positions": np.zeros((rows, length), np.int32),
  }
  for r, (ids, targets, mask) in enumerate(docs):
    n = len(ids)
    batch["input_ids"][r, :n] = ids
    batch["target_ids"][r, :n] = targets
    batch["loss_mask"][r, :n] = mask
    batch["segment_ids"][r, :n] = 1
    batch["positions"][r, :n] = np.arange(n)
  return batch


def _nll_chunk(logits_BxCxV, inputs, consts):
  """One chunk's masked NLL sum, with each row's own sum and its correct argmaxes beside it."""
  import jax.numpy as jnp
  from distil_jax.train.losses import token_correct, token_cross_entropy

  del consts
  m = inputs["mask"]
  nll_BxC = token_cross_entropy(logits_BxCxV, inputs["targets"]) * m
  return jnp.sum(nll_BxC), {
      "row_nll": jnp.sum(nll_BxC, axis=1),
      "correct": jnp.sum(token_correct(logits_BxCxV, inputs["targets"]) * m),
  }


@functools.partial(jax.jit, static_argnames=("graphdef", "chunk", "positions"))
def _sums(graphdef, state, batch, *, chunk: int, positions: int):
  """(NLL sum, target tokens, correct argmaxes, per-row NLL sums, per-row tokens): one pass of
  the LM head (one document a row, so a row's sums are its example's)."""
  from flax import nnx
  import jax.numpy as jnp
  from distil_jax.train.chunked import chunked_token_loss

  model = nnx.merge(graphdef, state)
  h_BxLxD, _ = model.hidden_states(batch["input_ids"], batch["positions"], batch["segment_ids"])
  mask = batch["loss_mask"].astype(jnp.float32)
  loss_sum, aux = chunked_token_loss(
      h_BxLxD,
      model.unembed_matrix(),
      {"targets": batch["target_ids"], "mask": mask},
      _nll_chunk,
      chunk=chunk,
      positions=positions,
  )
  return loss_sum, jnp.sum(mask), aux["correct"], aux["row_nll"], jnp.sum(mask, -1)


def evaluate_loss(
    model,
    data_dir: str,
    *,
    seq_len: int = 2048,
    batch_size: int = 8,
    chunk: int = 512,
    mesh=None,
    progress: bool = True,
) -> dict:
  """{"loss", "perplexity", "tokens", "examples", "token_accuracy"} over every example once."""
  from flax import nnx
  from distil_jax.data import read_manifest
  from distil_jax.sharding import DEFAULT_RULES, use_mesh
  from distil_jax.train.step import batch_sharding

  graphdef, state = nnx.split(model)
  examples = sum(s["examples"] for s in read_manifest(data_dir)["shards"])
  rows_multiple = 1
  sharding = None
  if mesh is not None:
    sharding = batch_sharding(mesh, DEFAULT_RULES)
    axes = sharding.spec[0] or ()
    rows_multiple = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
    if batch_size % rows_multiple:
      raise ValueError(
          f"batch_size {batch_size} must divide by the mesh's {rows_multiple} batch shards"
      )
  loss = tokens = correct = 0.0
  per_example = []  # [nll sum, target tokens] of each example, in the shards' order
  bar = tqdm(total=examples, desc="perplexity", unit="ex", disable=not progress, file=sys.stderr)
  for batch in _batches(read_documents(data_dir, seq_len), batch_size, seq_len, rows_multiple):
    # the LM head only at the scored positions (a power-of-two bucket of the most a row has)
    kw = dict(
        chunk=min(chunk, batch["input_ids"].shape[1]),
        positions=loss_positions.bucket(batch["loss_mask"]),
    )
    if sharding is not None:
      batch = {k: jax.device_put(v, sharding) for k, v in batch.items()}
      with use_mesh(mesh, DEFAULT_RULES):
        sums = _sums(graphdef, state, batch, **kw)
    else:
      sums = _sums(graphdef, state, batch, **kw)
    l, t, c, row_nll, row_tokens = jax.device_get(sums)
    loss, tokens, correct = loss + float(l), tokens + float(t), correct + float(c)
    real = np.count_nonzero(np.asarray(jax.device_get(batch["segment_ids"]))[:, 0])
    per_example += [[float(a), int(b)] for a, b in zip(row_nll[:real], row_tokens[:real])]
    bar.update(int(real))
  bar.close()
  if tokens == 0:
    raise ValueError(f"{data_dir}: no target tokens (every loss_mask is 0)")
  mean = loss / tokens
  return {
      "loss": mean,
      "perplexity": math.exp(mean),
      "tokens": int(tokens),
      "examples": examples,
      "token_accuracy": correct / tokens,
      "per_example": per_example,
  }
