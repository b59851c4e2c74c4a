"""One orbax CheckpointManager saving the train state and the data iterator together.

Layout: `<workdir>/checkpoints/<step>/{state,data}`. orbax writes each step under a temporary
name and renames it when complete, so a process killed mid-save leaves the previous step as
the latest usable one; the temporary directory such a kill leaves is removed by the next run.
A finished step that cannot be read (a corrupt or truncated file) is moved aside to
`checkpoints/unreadable-<step>` and the run resumes from the previous step, saying so; it is moved
only once an older step did restore, so a config that fits no step never moves any.
"""

from __future__ import annotations

import dataclasses
import contextlib
import gc
import json
import logging
import os
import sys
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from distil_jax.data import iterator_state
from distil_jax.train.config import CheckpointConfig


class IteratorStateHandler(ocp.CheckpointHandler):
  """Saves `iterator.get_state()` as JSON, one file per JAX process (each reads its own
  share of the data). Takes a dict or the bytes grain's DataLoader iterators return."""

  def _file(self, directory: epath.Path) -> epath.Path:
    return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

  def save(self, directory: epath.Path, args: "IteratorSave"):
    state = args.item.get_state()
    payload = {"bytes": state.decode()} if isinstance(state, bytes) else {"state": state}
    self._file(directory).write_text(json.dumps(payload))

  def restore(self, directory: epath.Path, args: "IteratorRestore"):
    path = self._file(directory)
    if not path.exists():
      raise FileNotFoundError(
          f"{path}: no data-iterator state for this process "
          f"(was the checkpoint written by {jax.process_count()} processes?)"
      )
    payload = json.loads(path.read_text())
    state = payload["bytes"].encode() if "bytes" in payload else payload["state"]
    if not isinstance(state, bytes):  # data.worker_count may have changed since the save
      state = iterator_state.adapt(state, args.item.get_state())
    args.item.set_state(state)
    return args.item

  def metadata(self, directory):
    return None

  def finalize(self, directory):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorRestore(ocp.args.CheckpointArgs):
  item: Any


def _abstract(tree):
  """Arrays (or ShapeDtypeStructs with shardings) -> restore targets on those shardings."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class CheckpointUnreadable(RuntimeError):
  pass


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  line = (text[0] if text else "").split(" See full TensorStore details")[0]
  return f"{type(e).__name__}: {line}"[:300]


@contextlib.contextmanager
def _quiet_failed_reads():
  """A failed orbax read leaves coroutines and callbacks that fail again as they are collected,
  each printing a traceback (event loop closed, ignored exceptions); the one line we print says
  everything they would. Silenced only while restoring."""
  hooks = sys.unraisablehook, threading.excepthook
  sys.unraisablehook, threading.excepthook = (lambda *_: None), (lambda *_: None)
  logging.disable(logging.ERROR)
  try:
    yield
  finally:
    gc.collect()  # let the failed reads' leftovers be collected while silenced
    logging.disable(logging.NOTSET)
    sys.unraisablehook, threading.excepthook = hooks


class Checkpointer:

  def __init__(self, workdir: str, cfg: CheckpointConfig):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=cfg.keep,
        enable_async_checkpointing=cfg.async_save,
        create=True,
        cleanup_tmp_directories=True,
    )  # left by a kill -9 mid-save
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data")
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator) -> None:
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=IteratorSave(data_iterator)
        ),
        force=True,
    )

  def restore(self, step: int, target_state, data_iterator):
    """Restore onto the shardings of `target_state` (arrays or ShapeDtypeStructs): the mesh
    may differ from the one that saved."""
    out = self.manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(target_state)),
            data=IteratorRestore(data_iterator),
        ),
    )
    return out.state

  def restore_latest(self, target_state, data_iterator) -> tuple[Any, int | None]:
    """(state, step) of the newest step that restores, falling back past unreadable ones;
    (None, None) when there is none. Raises CheckpointUnreadable when no step restores."""
    failed: list[tuple[int, BaseException]] = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        with _quiet_failed_reads():
          state = self.restore(step, target_state, data_iterator)
      except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many types for a bad file)
        failed.append((step, e))
        continue
      for bad, error in failed:
        self._set_aside(bad, step, error)
      return state, step
    if failed:
      step, error = failed[0]
      raise CheckpointUnreadable(
          f"{self.directory}: no checkpoint could be restored; the latest, step {step}: "
          f"{_first_line(error)}"
      ) from error
    return None, None

  def _set_aside(self, bad: int, resumed: int, error: BaseException) -> None:
    aside = os.path.join(self.directory, f"unreadable-{bad}")
    if jax.process_index() == 0:
      os.replace(os.path.join(self.directory, str(bad)), aside)
      print(
          f"distil-jax train: checkpoint {self.directory}/{bad} is unreadable ({_first_line(error)}); resuming from "
          f"step {resumed} (moved to {aside})",
          file=sys.stderr,
          flush=True,
      )
    from distil_jax.sharding import sync_processes  # noqa: PLC0415

    sync_processes(f"set_aside:{bad}")
    self.manager.reload()

  def reached_preemption(self, step: int) -> bool:
    """True on every process at the same step once any got a preemption notice (multi-host)."""
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def restore_params(step_dir: str, target_params):
  """Only the parameters of a saved train state (init from an earlier run's checkpoint)."""
  path = epath.Path(step_dir) / "state"
  target = {"params": _abstract(target_params)}
  with ocp.PyTreeCheckpointer() as ckptr:
    out = ckptr.restore(
        path,
        args=ocp.args.PyTreeRestore(
            item=target,
            restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True,
        ),
    )
  return out["params"]
