"""The client's own connection pool and asyncio network backend: keep-alive, server hang-ups, TLS, encodings."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import ssl
import subprocess
import zlib

import httpcore
import pytest

from distil_jax.curate.client import Completion, TeacherClient, _decoded
from distil_jax.curate.config import EndpointConfig
from distil_jax.curate.journal import Journal
from distil_jax.curate.testing.fault_server import FaultServer, _Connection
from distil_jax.curate.transport import ConnectionPool


def endpoint(base_url: str, **changes) -> EndpointConfig:
  fields = dict(
      name="teacher",
      base_url=base_url,
      model="m",
      api_key_env="",
      max_in_flight=8,
      requests_per_minute=0.0,
      tokens_per_minute=0.0,
      timeout_s=2.0,
      max_attempts=3,
      max_retry_s=10.0,
      backoff_base_s=0.02,
      backoff_max_s=0.1,
  )
  fields.update(changes)
  return EndpointConfig(**fields)


def prompt(i: int) -> list[dict]:
  return [{"role": "user", "content": f"<instruction>question {i}</instruction>"}]


async def serve(server: FaultServer, ssl_context: ssl.SSLContext | None = None):
  """Serves `server` on this loop; returns (asyncio server, port, the server-side transports)."""
  transports = []

  def factory():
    conn = _Connection(server)
    made = conn.connection_made
    conn.connection_made = lambda t: (transports.append(t), made(t))
    return conn

  srv = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0, ssl=ssl_context)
  return srv, srv.sockets[0].getsockname()[1], transports


def test_connections_are_kept_alive_and_a_server_hang_up_costs_no_retry(tmp_path):
  async def run():
    server = FaultServer()
    srv, port, transports = await serve(server)
    journal = Journal.open(str(tmp_path / "j.jsonl"))
    async with TeacherClient(endpoint(f"http://127.0.0.1:{port}/v1"), journal) as client:
      for i in range(10):  # one after another: one connection carries them all
        assert isinstance(await client.complete(prompt(i), {"max_tokens": 8}), Completion)
      assert client.connections_opened == 1
      for t in transports:  # the server closes its idle keep-alive connections
        t.close()
      await asyncio.sleep(0.05)
      out = await asyncio.gather(
          *(client.complete(prompt(i), {"max_tokens": 8}) for i in range(10, 18))
      )
      assert all(isinstance(o, Completion) for o in out)
      assert sum(client.stats.retries.values()) == 0  # the closed connection was noticed, not tried
      assert client.connections_opened == 1 + 8
    journal.close()
    srv.close()
    assert len(server.answered_keys) == 18

  asyncio.run(run())


def test_a_read_timeout_is_raised_by_the_backend():
  async def run():
    server = FaultServer(delay_s=1.0)
    srv, port, _ = await serve(server)
    pool = ConnectionPool(httpcore.Origin(b"http", b"127.0.0.1", port), ssl_context=None)
    conn = pool.acquire()
    body = json.dumps({"model": "m", "messages": prompt(0)}).encode()
    request = httpcore.Request(
        b"POST",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        content=body,
        headers=[(b"Host", b"127.0.0.1"), (b"Content-Length", str(len(body)).encode())],
        extensions={"timeout": {"connect": 1.0, "read": 0.1, "write": 1.0, "pool": 1.0}},
    )
    with pytest.raises(httpcore.ReadTimeout):
      await conn.handle_async_request(request)
    pool.release(conn)
    assert len(pool) == 0  # a connection that failed mid-request is not reused
    await pool.aclose()
    srv.close()

  asyncio.run(run())


def test_content_encodings_are_undone():
  payload = b'{"choices": []}'
  assert _decoded(payload, "") == payload
  assert _decoded(gzip.compress(payload), "gzip") == payload
  assert _decoded(zlib.compress(payload), "deflate") == payload
  raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
  assert _decoded(raw_deflate.compress(payload) + raw_deflate.flush(), "deflate") == payload
  with pytest.raises(zlib.error):
    _decoded(payload, "br")


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command to make a certificate"
)
def test_https_with_a_verified_certificate(tmp_path, monkeypatch):
  cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
  subprocess.run(
      [
          "openssl",
          "req",
          "-x509",
          "-newkey",
          "rsa:2048",
          "-nodes",
          "-keyout",
          str(key),
          "-out",
          str(cert),
          "-days",
          "1",
          "-subj",
          "/CN=localhost",
          "-addext",
          "subjectAltName=DNS:localhost,IP:127.0.0.1",
      ],
      check=True,
      capture_output=True,
  )
  monkeypatch.setenv(
      "SSL_CERT_FILE", str(cert)
  )  # the client's default context trusts it, and nothing else new

  async def run():
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(cert), str(key))
    server = FaultServer()
    srv, port, _ = await serve(server, server_tls)
    journal = Journal.open(str(tmp_path / "j.jsonl"))
    async with TeacherClient(endpoint(f"https://localhost:{port}/v1"), journal) as client:
      out = await asyncio.gather(
          *(client.complete(prompt(i), {"max_tokens": 8}) for i in range(12))
      )
      assert all(isinstance(o, Completion) for o in out), out
      assert client.connections_opened <= 8
    journal.close()
    # A client that does not trust the certificate refuses the connection.
    pool = ConnectionPool(
        httpcore.Origin(b"https", b"localhost", port),
        ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
    )
    conn = pool.acquire()
    request = httpcore.Request(
        b"GET",
        f"https://localhost:{port}/v1/models",
        headers=[(b"Host", b"localhost")],
        extensions={"timeout": {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}},
    )
    with pytest.raises(httpcore.ConnectError):
      await conn.handle_async_request(request)
    pool.release(conn)
    await pool.aclose()
    srv.close()

  asyncio.run(run())
