"""Chat data -> tokenized ArrayRecord shards (`prepare`) -> packed training batches (`pipeline`).

Public API (resolved lazily, so `prepare` never imports grain and nothing here imports JAX):
- `prepare_dataset(inputs, output, *, tokenizer=None, max_length=2048, overlong="truncate",
  strict=False, shard_size=10_000, overwrite=False, require_teacher_logprobs=False) -> manifest
  dict`
- `read_manifest(directory) -> dict`
- `make_dataset(data_dir, *, seq_len, batch_size, seed=0, shard_index=0, shard_count=1, ...)`
  -> grain `IterDataset` of batches; `make_iterator(data_dir, **same)` -> its checkpointable
  iterator. Batches follow DEVELOPERS.md: `input_ids`, `target_ids`, `loss_mask`,
  `segment_ids`, `positions`, `example_index` (global record index, -1 on padding), all
  `[batch_size, seq_len]`; with `teacher_store=STORE_DIR` also `topk_ids`, `topk_logprobs`
  `[batch_size, seq_len, K]`, `topk_tail` and `kd_mask` (see `teacher_join`).
- `ChatEncoder(tokenizer).encode(conversations) -> [(ids, assistant_mask)]`.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "prepare_dataset": "distil_jax.data.prepare",
    "read_manifest": "distil_jax.data.shards",
    "PrepareError": "distil_jax.data.prepare",
    "make_dataset": "distil_jax.data.pipeline",
    "make_iterator": "distil_jax.data.pipeline",
    "ChatEncoder": "distil_jax.data.chat",
}


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'distil_jax.data' has no attribute {name!r}")


__all__ = list(_LAZY)
