"""A checkpointed data iterator resumes when `data.worker_count` changed between runs."""

import numpy as np
import pytest
from etils import epath

from distil_jax.data import make_iterator
from distil_jax.train.checkpoint import IteratorRestore, IteratorSave, IteratorStateHandler

KW = dict(seq_len=128, batch_size=4, seed=3)


def _batches(it, n):
  return [next(it) for _ in range(n)]


@pytest.mark.parametrize("saved_workers, resumed_workers", [(0, 2), (2, 1)])
def test_resume_with_another_worker_count_continues_the_same_batches(
    corpus_dir, tmp_path, saved_workers, resumed_workers
):
  expected = _batches(make_iterator(corpus_dir, **KW), 5)
  handler, directory = IteratorStateHandler(), epath.Path(tmp_path)
  first = make_iterator(corpus_dir, worker_count=saved_workers, **KW)
  _batches(first, 3)
  handler.save(directory, IteratorSave(first))
  resumed = make_iterator(corpus_dir, worker_count=resumed_workers, **KW)
  try:
    handler.restore(directory, IteratorRestore(resumed))
    for got, want in zip(_batches(resumed, 2), expected[3:]):
      for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  finally:
    for it in (first, resumed):
      getattr(it, "close", lambda: None)()
