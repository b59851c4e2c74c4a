"""A deterministic stand-in for the grain pipeline: packed batches of random documents.

Batch `i` is a pure function of (seed, i, process), so `get_state()` is just the index, which
makes resume exactness checkable without the data layer.
"""

from __future__ import annotations

import numpy as np

from distil_jax.model import ModelConfig
from distil_jax.train.config import (
    CheckpointConfig,
    DataConfig,
    OptimConfig,
    Schedule,
    TrainConfig,
)


class SyntheticBatches:

  def __init__(
      self,
      *,
      batch_size: int,
      seq_len: int,
      vocab_size: int,
      seed: int = 0,
      process_index: int = 0,
      process_count: int = 1,
  ):
    self.batch_size, self.seq_len, self.vocab = batch_size // process_count, seq_len, vocab_size
    self.seed, self.process_index, self.index = seed, process_index, 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((self.seed, self.index, self.process_index))
    self.index += 1
    B, L = self.batch_size, self.seq_len
    # Two documents per row then padding; the second half of each document is "assistant".
    cut, end = L // 2, L - L // 8
    segment = np.where(np.arange(L) < cut, 1, np.where(np.arange(L) < end, 2, 0))
    segment_ids = np.tile(segment, (B, 1)).astype(np.int32)
    positions = np.where(segment == 2, np.arange(L) - cut, np.arange(L))
    positions = np.where(segment == 0, 0, positions)
    # A learnable pattern: each document counts up from a random start.
    starts = rng.integers(0, self.vocab, (B, 2))
    doc = np.where(segment == 1, 0, 1)
    input_ids = (starts[np.arange(B)[:, None], doc[None, :]] + positions[None]) % self.vocab
    target_ids = (input_ids + 1) % self.vocab
    loss_mask = np.tile(((positions >= 4) & (segment > 0)).astype(np.float32), (B, 1))
    loss_mask[:, cut - 1] = 0  # the last token of a document predicts nothing
    loss_mask[:, end - 1 :] = 0
    return dict(
        input_ids=input_ids.astype(np.int32),
        target_ids=target_ids.astype(np.int32),
        loss_mask=loss_mask,
        segment_ids=segment_ids,
        positions=np.tile(positions, (B, 1)).astype(np.int32),
    )

  def get_state(self) -> dict:
    return {"index": self.index}

  def set_state(self, state: dict) -> None:
    self.index = int(state["index"])


def tiny_train_config(**kw) -> TrainConfig:
  """2 layers, hidden 64, vocab 512: a whole train step compiles in seconds on CPU."""
  base = dict(
      model=ModelConfig.tiny(),
      optim=OptimConfig(lr=3e-3, schedule=Schedule.COSINE, warmup_steps=2),
      data=DataConfig(seq_len=64, batch_size=8),
      checkpoint=CheckpointConfig(every_steps=4, keep=2, async_save=True),
      steps=6,
      loss_chunk=16,
      log_every=1,
  )
  base.update(kw)
  return TrainConfig(**base)


def batches_for(cfg: TrainConfig, **kw) -> SyntheticBatches:
  return SyntheticBatches(
      batch_size=cfg.data.batch_size,
      seq_len=cfg.data.seq_len,
      vocab_size=cfg.model.vocab_size,
      **kw,
  )
