"""Resuming the batch iterator across a change of `data.worker_count`.

The packed batches do not depend on the worker count (pipeline.py), but grain's saved state does:
without workers the decoded stream's state is `{"next_index": N}`; with w workers it is an
interleave over w slices (slice k holds documents k, k+w, ...; read round-robin) whose per-slice
`next_index` values sum to N. Everything above that level (packing, batching, prefetch) is the same
for any worker count. `adapt(saved, fresh)` finds the level where the two states differ and
rewrites the saved one into the fresh iterator's form from N, the documents consumed.
"""

from __future__ import annotations

from typing import Any


class IteratorStateMismatch(ValueError):
  pass


def _consumed(state: dict) -> int:
  if set(state) == {"next_index"}:
    return int(state["next_index"])
  if "iterators_in_use_states" in state:
    return sum(int(s["next_index"]) for s in state["iterators_in_use_states"])
  raise IteratorStateMismatch(f"unknown data-iterator state {sorted(state)}")


def _for_workers(consumed: int, fresh: dict) -> dict:
  if set(fresh) == {"next_index"}:
    return {"next_index": consumed}
  if "iterators_in_use_states" in fresh:
    workers = len(fresh["exhausted"])
    return {
        **fresh,
        "next_index_in_cycle": consumed % workers,
        "next_index_in_datasets": workers,
        "iterators_in_use_indices": list(range(workers)),
        "iterators_in_use_states": [
            {"next_index": consumed // workers + (k < consumed % workers)} for k in range(workers)
        ],
        "exhausted": [0] * workers,
        "future_states": {},
    }
  raise IteratorStateMismatch(f"unknown data-iterator state {sorted(fresh)}")


def _workers(state: dict) -> int | None:
  """Worker count of a decoded-stream state (0: no workers); None above that level."""
  if set(state) == {"next_index"}:
    return 0
  if "iterators_in_use_states" in state:
    return len(state["exhausted"])
  return None


def adapt(saved: Any, fresh: Any) -> Any:
  """`saved` rewritten into the structure of `fresh` (another worker count); unchanged when equal."""
  if not isinstance(saved, dict) or not isinstance(fresh, dict):
    return saved
  saved_workers, fresh_workers = _workers(saved), _workers(fresh)
  if saved_workers is None and fresh_workers is None:
    if set(saved) != set(fresh) or not isinstance(saved.get("parent"), dict):
      if set(saved) == set(fresh):
        return saved
      raise IteratorStateMismatch(
          f"the saved data-iterator state {sorted(saved)} does not fit this "
          f"pipeline's {sorted(fresh)}"
      )
    return {**saved, "parent": adapt(saved["parent"], fresh["parent"])}
  if saved_workers == fresh_workers:
    return saved
  try:
    return _for_workers(_consumed(saved), fresh)
  except (KeyError, TypeError) as e:
    raise IteratorStateMismatch(
        f"cannot map the saved data-iterator state onto this pipeline ({e})"
    ) from None
