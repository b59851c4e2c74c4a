"""Multi-process failure handling: when one process fails, every process stops at once.

Without this, an exception on one host (a corrupt record, a full disk) leaves its peers blocked
inside the next step's collectives. The failing process then waits in JAX's shutdown barrier
(5 minutes by default) and the others only die when the coordination service gives up on the
missing heartbeats, with an error that names neither the process nor the cause.

`fail_fast()` fixes both ends. The failing process prints its traceback, publishes a one-line
reason in the coordination service's key-value store and exits 1 straight away. Every other
process runs a watcher thread that waits on that key; it prints which process failed and why,
and exits 1. With one process `fail_fast()` does nothing: exceptions propagate as usual.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback

FAILURE_KEY = "distil_jax/failure"
_POLL_MS = 1000


def _client():
  from jax._src import distributed  # noqa: PLC0415 (the client is not public API)

  return distributed.global_state.client


def _exit_now(message: str) -> None:
  print(message, file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(1)  # skips atexit's shutdown barrier, which would wait for the blocked peers


@contextlib.contextmanager
def fail_fast(what: str = "distil-jax"):
  """Run the body so that a failure on any process stops all of them within about a second.

  A normal return, or SystemExit with code 0, is not a failure. KeyboardInterrupt is one
  (a person stopping one process of a multi-host run wants the whole run stopped).
  """
  import jax  # noqa: PLC0415

  client = _client() if jax.process_count() > 1 else None
  if client is None:
    yield
    return
  me = jax.process_index()
  done = threading.Event()

  def watch():
    while not done.is_set():
      try:
        reason = client.blocking_key_value_get(FAILURE_KEY, _POLL_MS)
      except Exception:  # noqa: BLE001 (a timeout: nothing failed yet; or the service is gone)
        continue
      if not done.is_set():
        _exit_now(f"{what}: stopping process {me}: {reason}")

  watcher = threading.Thread(target=watch, name="distil-jax-fail-fast", daemon=True)
  watcher.start()
  try:
    yield
  except SystemExit as e:
    if e.code in (None, 0):
      raise
    done.set()
    _fail(client, me, what, f"exit code {e.code}")
  except BaseException as e:  # noqa: BLE001
    done.set()  # our own key must not be read back as a peer's failure
    traceback.print_exc()
    _fail(client, me, what, f"{type(e).__name__}: {e}")
  finally:
    done.set()
    watcher.join(timeout=2 * _POLL_MS / 1000)


def _fail(client, me: int, what: str, reason: str) -> None:
  line = f"process {me} failed: {reason}".replace("\n", " ")[:2000]
  try:
    client.key_value_set(FAILURE_KEY, line)
  except Exception:  # noqa: BLE001 (another process failed first and set it; or no service)
    pass
  _exit_now(f"{what}: {line}; the other processes are told to stop")
