"""A `distil-jax serve` subprocess on a free loopback port, for the length of a `with` block."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def served(cli: list[str], model_dir: str, *, cwd: str, env=None, timeout_s: float = 300.0):
  """Yields the server's base URL (`http://127.0.0.1:PORT/v1`); SIGTERM (a drain) at the end.
  A server that exits or does not answer `/v1/models` within `timeout_s` is a SystemExit naming
  the model directory."""
  port = free_port()
  args = ["serve", "--model", model_dir, "--host", "127.0.0.1", "--port", str(port)]
  print("$ distil-jax " + " ".join(args) + " &", flush=True)
  proc = subprocess.Popen(cli + args, cwd=cwd, env=env)
  url = f"http://127.0.0.1:{port}/v1"
  try:
    deadline = time.time() + timeout_s
    while True:
      if proc.poll() is not None:
        raise SystemExit(f"distil-jax serve --model {model_dir} exited with {proc.returncode}")
      try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
          print(f"  serving {json.loads(r.read())['data'][0]['id']} at {url}", flush=True)
          break
      except OSError:
        if time.time() > deadline:
          raise SystemExit(
              f"distil-jax serve --model {model_dir} did not answer {url}/models "
              f"within {timeout_s:.0f} s"
          ) from None
        time.sleep(0.5)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
