"""`distil-jax api-logits`: the offline teacher store built from an OpenAI-compatible endpoint's
prompt log-probs equals the white-box store of the same teacher, trains offline KD, refuses a
server that echoes other tokens, maps strings by the documented rules, and resumes after kill -9.

All HTTP runs over real loopback sockets: `distil-jax serve`'s server in-process, or a small
scripted server (`_Scripted`) where the answers must be chosen exactly."""

import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import distil_jax
from distil_jax.cli import main as cli
from distil_jax.data import shards, teacher_store
from distil_jax.data.api_teacher import TokenMap
from distil_jax.data.prepare import prepare_dataset
from distil_jax.serve import ServeConfig, start_server
from distil_jax.testing.hf_models import make_hf_checkpoint

ROOT = Path(__file__).resolve().parents[2]
K, MAX_LENGTH, N_CHATS, UNIT = 5, 96, 12, 4
VOCAB = 151_665  # a teacher without padding rows: the server's softmax runs over all its rows
# Stated tolerances (float32 teacher, float32 stores): the server's full-sequence forward pass
# and the white-box packed one agree to float32 rounding.
LOGPROB_ATOL, TAIL_ATOL = 2e-4, 2e-3


def _records(data: Path):
  out = []
  for s in shards.read_manifest(data)["shards"]:
    out += [shards.decode_record(r) for r in shards.read_records(data / s["path"])]
  return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tok, make_chats, jsonl_writer):
  """Prepared chats, a tiny float32 teacher with wide weights (well separated top-k), its
  white-box store, `distil-jax serve` over it on loopback, and the store built through it."""
  root = tmp_path_factory.mktemp("graybox")
  chats = []
  for chat in make_chats(N_CHATS, seed=11):
    turns = [m for m in chat["messages"] if m["role"] != "system"][:2]
    chats.append(
        {**chat, "messages": [{**m, "content": " ".join(m["content"].split()[:24])} for m in turns]}
    )
  jsonl_writer(root / "chats.jsonl", chats)
  data = root / "data"
  prepare_dataset([root / "chats.jsonl"], data, tokenizer=tok, max_length=MAX_LENGTH, shard_size=5)
  teacher = make_hf_checkpoint(
      str(root / "teacher"),
      vocab_size=VOCAB,
      hidden_size=32,
      intermediate_size=64,
      num_attention_heads=4,
      num_key_value_heads=2,
      initializer_range=1.0,
      max_position_embeddings=256,
  )
  tok.save_pretrained(teacher)
  white = root / "white"
  assert (
      cli(
          [
              "teacher-logits",
              "--teacher",
              teacher,
              "--data",
              str(data),
              "--output",
              str(white),
              "--top_k",
              str(K),
              "--batch_size",
              "2",
              "--unit_size",
              str(UNIT),
              "--chunk",
              "16",
              "--dtype",
              "float32",
              "--logprob_dtype",
              "float32",
          ]
      )
      == 0
  )
  model = distil_jax.from_pretrained(teacher, dtype=jnp.float32)
  server = start_server(
      model,
      tok,
      port=0,
      config=ServeConfig(served_model_names=("tiny",), strict_model_name=True, max_batch=8),
  )
  api = root / "api"
  assert _api_logits(server.url, data, api) == 0
  yield {"root": root, "data": data, "white": white, "api": api, "server": server, "tok": tok}
  server.stop()


def _api_logits(url, data, output, *extra, model="tiny") -> int:
  return cli(
      [
          "api-logits",
          "--endpoint",
          url,
          "--model",
          model,
          "--data",
          str(data),
          "--output",
          str(output),
          "--top_k",
          str(K),
          "--unit_size",
          str(UNIT),
          "--logprob_dtype",
          "float32",
          "--concurrency",
          "4",
          *extra,
      ]
  )


def test_api_store_equals_the_white_box_store(setup):
  """Same positions and top-k ids; log-probs within LOGPROB_ATOL, tails within TAIL_ATOL. An
  alternative whose string is ambiguous (several ids decode to it) is missing from the API
  store, its slot padded at -inf, and its probability is in the API tail."""
  tok = setup["tok"]
  token_map = TokenMap(tok, VOCAB)
  ambiguous = {i for i, s in enumerate(token_map.strings) if token_map.lookup(s) == -1}
  white = teacher_store.TeacherStore(setup["white"])
  api = teacher_store.TeacherStore(setup["api"])
  manifest = teacher_store.read_manifest(setup["api"])
  assert manifest["teacher"]["source"] == "api" and manifest["top_k"] == K
  records = _records(setup["data"])
  assert len(api) == len(white) == len(records)
  dropped_positions = 0
  for index in range(len(records)):
    w, a = white[index], api[index]
    assert (a.example_id, a.index, a.num_tokens, a.sha256) == (
        w.example_id,
        w.index,
        w.num_tokens,
        w.sha256,
    )
    np.testing.assert_array_equal(a.positions, w.positions)
    for row in range(len(w.positions)):
      keep = [j for j in range(K) if int(w.topk_ids[row, j]) not in ambiguous]
      n = len(keep)
      np.testing.assert_array_equal(a.topk_ids[row, :n], w.topk_ids[row, keep])
      np.testing.assert_allclose(
          a.topk_logprobs[row, :n], w.topk_logprobs[row, keep], rtol=0, atol=LOGPROB_ATOL
      )
      assert np.all(np.isneginf(a.topk_logprobs[row, n:]))
      assert len(set(a.topk_ids[row].tolist())) == K  # padding ids are distinct, unused
      lost = [j for j in range(K) if j not in keep]
      dropped_positions += bool(lost)
      expected_tail = np.logaddexp(
          float(w.tail[row]), *[float(w.topk_logprobs[row, j]) for j in lost] or [-np.inf]
      )
      np.testing.assert_allclose(a.tail[row], expected_tail, rtol=0, atol=TAIL_ATOL)
  assert dropped_positions >= 1, "want at least one ambiguous alternative in the test data"
  counts = manifest["api"]
  assert counts["positions_padded"] == dropped_positions
  assert counts["alternatives_ambiguous"] >= 1


@pytest.mark.slow
def test_offline_kd_trains_from_the_api_store(setup, tmp_path):
  workdir = tmp_path / "run"
  assert (
      cli(
          [
              "train",
              "--config",
              str(ROOT / "configs/kd/tiny_offline.py"),
              "--workdir",
              str(workdir),
              f"--config.data.path={setup['data']}",
              f"--config.data.teacher_store={setup['api']}",
              "--config.steps=2",
              "--config.data.batch_size=8",
              "--config.log_every=1",
              "--config.optim.warmup_steps=1",
              "--config.checkpoint.every_steps=100",
              "--no_progress",
          ]
      )
      == 0
  )
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2]
  assert all(np.isfinite(r["loss"]) and np.isfinite(r["kd"]) and r["kd"] > 0 for r in rows)


class _Scripted:
  """A loopback HTTP server answering `/v1/completions` from `answer(body, attempt) -> (status,
  payload)`; `attempt` counts requests, from 0."""

  def __init__(self, answer):
    count = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):

      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with lock:
          attempt = count[0]
          count[0] += 1
        status, payload = answer(body, attempt)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      def log_message(self, *args):
        pass

    self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
    self.requests = count
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


def _echo(tok, ids, top_of, as_ids=False):
  """An OpenAI legacy echo answer for `ids`: per-token strings (`token_id:N` with `as_ids`),
  `top_of(i)` alternatives."""
  name = (lambda i: f"token_id:{i}") if as_ids else (lambda i: tok.decode([i]))
  return {
      "choices": [
          {
              "text": "",
              "index": 0,
              "finish_reason": "length",
              "logprobs": {
                  "tokens": [name(i) for i in ids] + ["x"],
                  "token_logprobs": [None] + [-1.0] * len(ids),
                  "top_logprobs": [None] + [top_of(i) for i in range(1, len(ids))] + [{"x": -1.0}],
              },
          }
      ]
  }


def test_a_server_that_echoes_other_tokens_is_refused_naming_example_and_position(
    setup, tmp_path, capsys
):
  tok = setup["tok"]
  first_id = _records(setup["data"])[0][0]

  def answer(body, attempt):
    ids = list(body["prompt"])
    ids[3] = (ids[3] + 1) % 1000  # as if the server had re-tokenised the text
    return 200, _echo(tok, ids, lambda i: {tok.decode([ids[i]]): -0.1})

  server = _Scripted(answer)
  try:
    assert _api_logits(server.url, setup["data"], tmp_path / "s", "--concurrency", "1") == 2
  finally:
    server.close()
  err = capsys.readouterr().err
  assert f"example {first_id!r} (record 0), position 3: the server echoed" in err, err
  assert server.url in err
  assert not (tmp_path / "s" / "manifest.json").exists()


def test_mapping_rules_retries_and_clear_failures(setup, tmp_path, capsys):
  """token_id:N strings, an ambiguous string dropped into the tail, padding at -inf, a 503
  retried; then a 400 and a closed port each exit 2 naming the endpoint."""
  tok = setup["tok"]
  alternatives = {"token_id:5": -0.5, "\ufffd": -1.0, tok.decode([7]): -2.0}

  def answer(body, attempt):
    if attempt == 0:
      return 503, {"error": {"message": "warming up"}}
    if body.get("return_tokens_as_token_ids") is not True:
      return 400, {"error": {"message": "expected return_tokens_as_token_ids"}}
    return 200, _echo(tok, body["prompt"], lambda i: alternatives, as_ids=attempt % 2 == 0)

  server = _Scripted(answer)
  try:
    assert (
        _api_logits(
            server.url, setup["data"], tmp_path / "s", "--backoff_s", "0.01", "--return_token_ids"
        )
        == 0
    )
  finally:
    server.close()
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert summary["retries"] == 1 and summary["requests"] == N_CHATS
  store = teacher_store.TeacherStore(tmp_path / "s")
  rec = store[0]
  assert len(rec.positions) > 0
  np.testing.assert_array_equal(rec.topk_ids[:, :2], np.tile([5, 7], (len(rec.positions), 1)))
  np.testing.assert_array_equal(
      rec.topk_logprobs[:, :2], np.tile([-0.5, -2.0], (len(rec.positions), 1))
  )
  assert np.all(np.isneginf(rec.topk_logprobs[:, 2:]))
  assert all(len(set(r.tolist())) == K for r in rec.topk_ids)
  np.testing.assert_allclose(rec.tail, math.log(1 - math.exp(-0.5) - math.exp(-2.0)), rtol=1e-6)
  assert summary["alternatives_ambiguous"] == summary["stored_positions"]

  refusing = _Scripted(lambda body, attempt: (400, {"error": {"message": "no echo here"}}))
  try:
    assert _api_logits(refusing.url, setup["data"], tmp_path / "r") == 2
  finally:
    refusing.close()
  err = capsys.readouterr().err
  assert re.search(rf"endpoint {re.escape(refusing.url)}/completions answered 400 to example", err)
  assert "no echo here" in err

  with socket.socket() as s:  # a port nothing listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  assert (
      _api_logits(
          f"http://127.0.0.1:{port}/v1",
          setup["data"],
          tmp_path / "d",
          "--retries",
          "1",
          "--backoff_s",
          "0.01",
      )
      == 2
  )
  err = capsys.readouterr().err
  assert f"endpoint http://127.0.0.1:{port}/v1/completions is unreachable" in err


def test_the_http_side_imports_no_jax():
  code = (
      "import sys; from distil_jax.commands import api_logits; "
      "from distil_jax.data import api_client, api_teacher; "
      "import array_record.python.array_record_data_source; "
      "from distil_jax.tokenizer import load_tokenizer; assert 'jax' not in sys.modules"
  )
  subprocess.run(
      [sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
  )


def test_a_killed_run_resumes(setup, tmp_path, capsys):
  output = tmp_path / "store"
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  killed = subprocess.run(
      [
          sys.executable,
          "-m",
          "distil_jax.cli",
          "api-logits",
          "--endpoint",
          setup["server"].url,
          "--model",
          "tiny",
          "--data",
          str(setup["data"]),
          "--output",
          str(output),
          "--top_k",
          str(K),
          "--unit_size",
          str(UNIT),
          "--logprob_dtype",
          "float32",
          "--kill_after_units",
          "1",
      ],
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert killed.returncode == -9, killed.stderr
  names = {p.name for p in output.iterdir()}
  assert "unit-00000.json" in names and "unit-00001.json" not in names
  assert any(n.startswith(".unit-00001.array_record.tmp-") for n in names)
  assert "manifest.json" not in names
  assert _api_logits(setup["server"].url, setup["data"], output) == 0
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  units = len(teacher_store.read_manifest(setup["api"])["units"])
  assert summary["units_computed"] == units - 1
  assert not any(p.name.startswith(".") for p in output.iterdir())
  resumed, straight = teacher_store.TeacherStore(output), teacher_store.TeacherStore(setup["api"])
  for index in range(len(straight)):
    a, b = resumed[index], straight[index]
    assert (a.example_id, a.sha256) == (b.example_id, b.sha256)
    np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
    np.testing.assert_allclose(a.topk_logprobs, b.topk_logprobs, rtol=0, atol=1e-5)
