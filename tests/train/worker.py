"""A training process for the subprocess tests: `python worker.py WORKDIR STEPS [PROCESS_ID
NUM_PROCESSES PORT]`. Prints one JSON line with the final step, losses and a params checksum."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402


class _FailingBatches:
  """Raises on one process at one batch, as a corrupt record would."""

  def __init__(self, inner, pid, fail_pid, fail_batch):
    self.inner, self.fails = inner, pid == fail_pid
    self.fail_batch, self.count = fail_batch, 0

  def __iter__(self):
    return self

  def __next__(self):
    self.count += 1
    if self.fails and self.count == self.fail_batch:
      raise ValueError(f"corrupt record in batch {self.count}")
    return next(self.inner)

  def __getattr__(self, name):  # get_state, set_state, index
    return getattr(self.inner, name)


def main():
  workdir, steps = sys.argv[1], int(sys.argv[2])
  if len(sys.argv) > 3:
    pid, nproc, port = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
  else:
    pid, nproc = 0, 1
  import numpy as np
  from distil_jax.train import train
  from distil_jax.train.config import CheckpointConfig
  from synthetic import batches_for, tiny_train_config

  every = int(os.environ.get("CHECKPOINT_EVERY", "1000"))
  cfg = tiny_train_config(
      steps=steps, checkpoint=CheckpointConfig(every_steps=every, keep=2, async_save=True)
  )
  batches = batches_for(cfg, process_index=pid, process_count=nproc)
  fail_at = os.environ.get("FAIL_AT")  # "PROCESS:BATCH": that process's data raises there
  if fail_at:
    batches = _FailingBatches(batches, pid, *map(int, fail_at.split(":")))
  from distil_jax.multihost import fail_fast

  with fail_fast("worker"):
    result = train(cfg, workdir, batches, progress=False)
  params = jax.tree.leaves(result.state.params)
  from jax.experimental import multihost_utils

  checksum = float(
      sum(
          np.sum(np.asarray(multihost_utils.process_allgather(p, tiled=True)), dtype=np.float64)
          for p in params
      )
  )
  print(
      json.dumps(
          {
              "process": pid,
              "step": result.step,
              "data_index": batches.index,
              "loss": result.last_metrics["loss"],
              "checksum": checksum,
          }
      ),
      flush=True,
  )


if __name__ == "__main__":
  main()
