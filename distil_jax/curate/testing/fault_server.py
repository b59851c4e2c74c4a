"""A loopback OpenAI-compatible `/v1/chat/completions` server that injects scripted faults.

A request's faults depend on a hash of its body and on how many times that body was seen before,
so a retried request eventually succeeds and the whole run is reproducible. Faults: 429 with
Retry-After or retry-after-ms, 500, 503, slow answers (longer than the client's timeout), dropped
connections, malformed JSON, a body truncated mid-JSON, and 400 content-filter refusals for prompts
containing CONTENT_FILTER_WORD. Only `POST /v1/chat/completions` is served: any other path answers 404, as
vLLM does for a base URL without `/v1`. `always_status=503` (or 404, 400, ...) answers every request with
that status, an endpoint that refuses everything. Raw asyncio protocol and timers, so 500+ requests/s cost a small part of one core.

Run standalone: `python -m distil_jax.curate.testing.fault_server --port 8123 --delay_s 1`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import hashlib
import json
import threading

from distil_jax.curate.testing import scripted_teacher

CONTENT_FILTER_WORD = "FORBIDDEN-TOPIC"
FAULTS = (
    "429_retry_after",
    "429_retry_after_ms",
    "500",
    "503",
    "slow",
    "drop",
    "malformed_json",
    "truncated_json",
)


@dataclasses.dataclass(frozen=True)
class FaultPlan:
  fault_rate: float = 0.0  # share of distinct requests whose first attempts fail
  max_faults_per_request: int = 2
  slow_s: float = 2.0
  retry_after_s: float = 0.05

  def fault_for(self, body_hash: int, attempt: int) -> str | None:
    if attempt > self.max_faults_per_request or (body_hash % 10_000) >= self.fault_rate * 10_000:
      return None
    return FAULTS[(body_hash // 10_000 + attempt) % len(FAULTS)]


def _response(
    status: int,
    body: bytes,
    extra_headers: dict | None = None,
    *,
    declared_length: int | None = None,
):
  reason = {
      200: "OK",
      400: "Bad Request",
      401: "Unauthorized",
      404: "Not Found",
      422: "Unprocessable Entity",
      429: "Too Many Requests",
      500: "Internal Server Error",
      503: "Service Unavailable",
  }.get(status, "Error")
  headers = {
      "content-type": "application/json",
      "content-length": str(declared_length or len(body)),
      **(extra_headers or {}),
  }
  head = (
      f"HTTP/1.1 {status} {reason}\r\n"
      + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
      + "\r\n"
  )
  return head.encode() + body


class _Connection(asyncio.Protocol):

  def __init__(self, server: "FaultServer"):
    self.server = server
    self.buffer = b""
    self.transport = None

  def connection_made(self, transport):
    self.transport = transport

  def data_received(self, data: bytes):
    self.buffer += data
    while True:  # every complete request in the buffer (clients may pipeline)
      end = self.buffer.find(b"\r\n\r\n")
      if end < 0:
        return
      head = self.buffer[:end].decode("latin-1").split("\r\n")
      headers = {
          k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])
      }
      length = int(headers.get("content-length", "0"))
      if len(self.buffer) < end + 4 + length:
        return
      body, self.buffer = self.buffer[end + 4 : end + 4 + length], self.buffer[end + 4 + length :]
      self.server.handle(self.transport, head[0], headers, body)


class FaultServer:

  def __init__(
      self,
      *,
      delay_s: float = 0.0,
      faults: FaultPlan = FaultPlan(),
      api_key: str = "",
      always_status: int | None = None,
  ):
    self.delay_s = delay_s
    self.always_status = always_status
    self.requests = 0  # every request received, whatever was answered
    self.faults = faults
    self.api_key = api_key
    self.attempts: collections.Counter = collections.Counter()
    self.injected: collections.Counter = collections.Counter()
    self.answered_keys: list[str] = []  # X-Client-Request-Id of every 200 sent, in order
    self.port = 0
    self._loop: asyncio.AbstractEventLoop | None = None
    self._thread: threading.Thread | None = None

  def handle(self, transport, request_line: str, headers: dict, body: bytes) -> None:
    """Decides the fault now; answers after the delay from a timer (no task per request: the
    benchmark's server shares the machine with the client it measures)."""
    self.requests += 1
    if request_line.split(" ")[:2] != ["POST", "/v1/chat/completions"]:
      transport.write(_response(404, b'{"detail":"Not Found"}'))
      return
    if self.always_status is not None:
      transport.write(_response(self.always_status, b'{"error":{"message":"scripted refusal"}}'))
      return
    if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
      transport.write(
          _response(401, b'{"error":{"message":"invalid api key","code":"invalid_api_key"}}')
      )
      return
    body_hash = int.from_bytes(hashlib.sha256(body).digest()[:8], "big")
    self.attempts[body_hash] += 1
    fault = self.faults.fault_for(body_hash, self.attempts[body_hash])
    if fault:
      self.injected[fault] += 1
    delay = self.faults.slow_s if fault == "slow" else self.delay_s
    if delay:
      asyncio.get_running_loop().call_later(delay, self._answer, transport, headers, body, fault)
    else:
      self._answer(transport, headers, body, fault)

  def _answer(self, transport, headers: dict, body: bytes, fault: str | None) -> None:
    if transport.is_closing():
      return
    request = json.loads(body)
    if CONTENT_FILTER_WORD in json.dumps(request["messages"], ensure_ascii=False):
      transport.write(
          _response(
              400,
              b'{"error":{"code":"content_filter","message":"The response was '
              b'filtered due to the prompt triggering content management policy."}}',
          )
      )
      return
    if fault and fault.startswith("429"):
      hdr = (
          {"retry-after": f"{self.faults.retry_after_s:g}"}
          if fault == "429_retry_after"
          else {"retry-after-ms": f"{self.faults.retry_after_s * 1000:g}"}
      )
      transport.write(_response(429, b'{"error":{"message":"rate limited"}}', hdr))
      return
    if fault in ("500", "503"):
      transport.write(_response(int(fault), b'{"error":{"message":"overloaded"}}'))
      return
    if fault == "drop":
      transport.abort()
      return
    content, finish_reason = scripted_teacher.answer(request)
    payload = json.dumps(
        {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "model": request.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": len(body) // 4,
                "completion_tokens": len(content) // 4 + 1,
                "total_tokens": len(body) // 4 + len(content) // 4 + 1,
            },
        }
    ).encode()
    if fault == "malformed_json":
      transport.write(_response(200, payload[: len(payload) // 2]))
      return
    if fault == "truncated_json":  # promise the whole body, send half, hang up
      transport.write(_response(200, payload[: len(payload) // 2], declared_length=len(payload)))
      transport.close()
      return
    self.answered_keys.append(headers.get("x-client-request-id", ""))
    transport.write(_response(200, payload))

  async def serve(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.AbstractServer:
    server = await asyncio.get_running_loop().create_server(
        lambda: _Connection(self), host, port, backlog=2048
    )
    self.port = server.sockets[0].getsockname()[1]
    return server

  def start_in_thread(self) -> str:
    """Serves from a daemon thread; returns the base URL (http://127.0.0.1:PORT/v1)."""
    ready = threading.Event()

    def run():
      self._loop = asyncio.new_event_loop()
      self._loop.run_until_complete(self.serve())
      ready.set()
      self._loop.run_forever()

    self._thread = threading.Thread(target=run, daemon=True, name="fault-server")
    self._thread.start()
    if not ready.wait(10):
      raise RuntimeError("fault server did not start within 10 s")
    return f"http://127.0.0.1:{self.port}/v1"

  def stop(self) -> None:
    if self._loop is None:
      return

    async def shutdown():
      tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
      for task in tasks:
        task.cancel()
      await asyncio.gather(*tasks, return_exceptions=True)
      self._loop.stop()

    asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
    self._thread.join(5)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--delay_s", type=float, default=0.0)
  parser.add_argument("--fault_rate", type=float, default=0.0)
  args = parser.parse_args()
  try:
    import uvloop

    uvloop.install()
  except ImportError:
    pass

  async def forever():
    server = FaultServer(delay_s=args.delay_s, faults=FaultPlan(fault_rate=args.fault_rate))
    await server.serve("127.0.0.1", args.port)
    print(f"serving on http://127.0.0.1:{server.port}/v1", flush=True)
    await asyncio.Event().wait()

  asyncio.run(forever())


if __name__ == "__main__":
  main()
