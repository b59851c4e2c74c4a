"""What the server refuses, and how it answers broken HTTP: every unsupported field is a 400 that
names it, bad numbers and strings are 400s, half-sent or malformed requests get a 4xx, not a hang.
"""

import socket
import time

import httpx
import pytest

MESSAGES = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"response_format": {"type": "json_xml"}}, "response_format.type"),
        (
            {"tool_choice": "required", "tools": [{"type": "function", "function": {"name": "f"}}]},
            "tool_choice",
        ),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"best_of": 3}, "best_of"),
        ({"suffix": "end"}, "suffix"),
        ({"echo": True}, "echo"),
        ({"guided_json": {}}, "guided_json"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"999999999": 5}}, "logit_bias"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_unsupported_fields_are_refused_by_name(server, extra, param):
  kind = "completions" if param in ("best_of", "suffix") else "chat/completions"
  body = {
      "model": "tiny",
      **({"prompt": "x"} if kind == "completions" else {"messages": MESSAGES}),
      **extra,
  }
  r = httpx.post(f"{server.url}/{kind}", json=body, timeout=30)
  assert r.status_code == 400, r.text
  assert r.json()["error"]["param"] == param and param in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "raw, param",
    [
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
            "temperature",
        ),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "top_p": Infinity}',
            "top_p",
        ),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "frequency_penalty": -3}',
            "frequency_penalty",
        ),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}',
            "messages[0].content",
        ),
    ],
)
def test_bad_numbers_and_unencodable_strings_are_400s(server, raw, param):
  r = httpx.post(
      f"{server.url}/chat/completions",
      content=raw,
      timeout=30,
      headers={"content-type": "application/json"},
  )
  assert r.status_code == 400, r.text
  assert r.json()["error"]["param"] == param


def test_model_route_health_and_metrics(server):
  assert httpx.get(f"{server.url}/models/tiny").json()["id"] == "tiny"
  assert httpx.get(f"{server.url}/models/other").status_code == 404
  root = server.url.removesuffix("/v1")
  assert httpx.get(f"{root}/health").json() == {"status": "ok"}
  httpx.post(
      f"{server.url}/completions",
      timeout=60,
      json={"model": "tiny", "prompt": "Hi", "max_tokens": 2, "temperature": 0},
  )
  text = httpx.get(f"{root}/metrics").text
  values = {
      line.split(" ")[0]: float(line.split(" ")[1])
      for line in text.splitlines()
      if line and not line.startswith("#")
  }
  assert values['distil_jax_requests_total{route="/v1/completions",status="200"}'] >= 1
  assert values["distil_jax_generation_tokens_total"] >= 1
  assert values["distil_jax_queue_depth"] == 0
  assert values["distil_jax_request_latency_seconds_count"] >= 1


def _exchange(server, data: bytes, wait_s: float = 5.0) -> bytes:
  with socket.create_connection((server.host, server.port), timeout=wait_s) as s:
    s.sendall(data)
    received = b""
    while chunk := s.recv(65536):
      received += chunk
    return received


def test_half_a_body_gets_408_after_the_read_timeout(server):
  started = time.monotonic()
  reply = _exchange(
      server,
      b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n" b'\r\n{"model":',
  )
  assert reply.startswith(b"HTTP/1.1 408")
  assert time.monotonic() - started < 4  # read timeout is 1 s in the fixture


def test_an_idle_keep_alive_connection_is_closed(server):
  started = time.monotonic()
  assert _exchange(server, b"") == b""  # no request at all: closed after the idle timeout (2 s)
  assert time.monotonic() - started < 4.5


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (
            b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n",
            400,
        ),
        (b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
        (b"GET /v1/models HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"NONSENSE\r\n\r\n", 400),
    ],
)
def test_malformed_http_gets_an_answer(server, request_bytes, status):
  reply = _exchange(server, request_bytes)
  assert reply.startswith(f"HTTP/1.1 {status}".encode()), reply[:80]


def test_a_chunked_body_is_read(server):
  body = b'{"model": "tiny", "prompt": "Hi", "max_tokens": 2, "temperature": 0}'
  half = len(body) // 2
  chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
      half,
      body[:half],
      len(body) - half,
      body[half:],
  )
  reply = _exchange(
      server,
      b"POST /v1/completions HTTP/1.1\r\nConnection: close\r\n"
      b"Transfer-Encoding: chunked\r\n\r\n" + chunked,
      wait_s=60,
  )
  assert reply.startswith(b"HTTP/1.1 200") and b'"text_completion"' in reply
