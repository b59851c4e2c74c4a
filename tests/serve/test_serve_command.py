"""`distil-jax serve` as a process: the checkpoint's dtype and generation_config are its defaults,
impossible limits are refused at start, and SIGTERM lets requests in flight finish."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import portpicker
import pytest

from distil_jax.testing.hf_models import hf_logits

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def _serve(model_dir, *extra):
  port = portpicker.pick_unused_port()
  proc = subprocess.Popen(
      [
          sys.executable,
          "-m",
          "distil_jax.cli",
          "serve",
          "--model",
          str(model_dir),
          "--port",
          str(port),
          "--served_model_name",
          "tiny",
          *extra,
      ],
      env=ENV,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  return proc, f"http://127.0.0.1:{port}/v1"


def _wait_ready(proc):
  for line in proc.stdout:
    if line.startswith("serving"):
      return
  raise AssertionError(f"the server exited with {proc.wait()}")


@pytest.fixture(scope="module")
def greedy_checkpoint(checkpoint, tmp_path_factory):
  """The float32 test checkpoint with a generation_config.json that asks for greedy decoding."""
  path = tmp_path_factory.mktemp("greedy") / "hf"
  shutil.copytree(checkpoint, path)
  (path / "generation_config.json").write_text(json.dumps({"do_sample": False, "top_k": 20}))
  return path


def test_defaults_from_the_checkpoint_and_drain_on_sigterm(greedy_checkpoint, tokenizer):
  proc, url = _serve(greedy_checkpoint, "--max_wait_ms", "1000")
  try:
    _wait_ready(proc)
    prompt = tokenizer.encode("The quick brown fox jumps over the lazy dog")
    # float32 computation, as the checkpoint declares: prompt log-probs equal transformers'.
    scored = httpx.post(
        f"{url}/completions",
        timeout=120,
        json={"prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 0},
    ).json()
    reference = hf_logits(str(greedy_checkpoint), np.array([prompt]))[0].astype(np.float64)
    reference -= np.log(
        np.exp(reference - reference.max(-1, keepdims=True)).sum(-1, keepdims=True)
    ) + reference.max(-1, keepdims=True)
    np.testing.assert_allclose(
        scored["choices"][0]["logprobs"]["token_logprobs"][1:],
        [reference[t - 1, prompt[t]] for t in range(1, len(prompt))],
        atol=2e-4,
    )
    # No sampling settings in the request: generation_config says greedy.
    ask = lambda **kw: httpx.post(
        f"{url}/chat/completions",
        timeout=120,
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, **kw},
    ).json()
    default = [ask()["choices"][0]["message"]["content"] for _ in range(2)]
    assert default == [ask(temperature=0)["choices"][0]["message"]["content"]] * 2

    # SIGTERM while a request waits for its batch: it is answered, a new one gets 503.
    answers = []
    thread = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{url}/completions", timeout=120, json={"prompt": "Hello", "max_tokens": 4})
        )
    )
    thread.start()
    time.sleep(0.4)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    late = httpx.post(f"{url}/completions", timeout=30, json={"prompt": "Hi", "max_tokens": 2})
    assert late.status_code == 503
    thread.join(60)
    assert answers[0].status_code == 200 and answers[0].json()["choices"][0]["text"] is not None
    assert proc.wait(60) == 0
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def test_max_model_len_beyond_the_positions_is_refused_at_start(checkpoint):
  proc, _ = _serve(checkpoint, "--max_model_len", "100000")
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 2
  assert "--max_model_len 100000 is beyond the model's 256 positions" in out
