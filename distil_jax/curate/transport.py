"""The teacher client's HTTP hot path: httpcore HTTP/1.1 connections over plain asyncio sockets.

Why not `httpx.AsyncClient` (profiled with py-spy at 512 requests in flight against a 1 s loopback
server, 64 clients of 8 connections, tools/bench_curate.py): the client's event loop is one thread,
so requests/s can never exceed 1 / (client CPU per request), and with AsyncClient that was 2.2 ms,
a ceiling of ~450/s below the 460/s target. Where it went: the Client layer (request building,
cookies, auth and redirect wrappers, response decoding) ~26% of samples; httpcore's
`AsyncConnectionPool` ~11% (it rescans every queued request against every connection on each
event, and checks each idle connection's socket for readability through anyio's
`extra_attributes`, which rebuilds a dict of lambdas on every call); the anyio network stream ~20%
(a cancel scope and a checkpoint per read and per write).

What stays: httpx's own protocol engine, `httpcore.AsyncHTTPConnection` (h11, TLS with ALPN, connect
retries, keep-alive expiry, the same exceptions httpx maps to its TransportError family). What is
replaced: the pool (a LIFO free list; each connection carries one request at a time and the caller
bounds how many are in flight, so there is nothing to scan or queue) and the network backend (an
asyncio Protocol; a read that has to wait is one future and one timer). No anyio task groups or
cancel scopes in the byte path.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, Iterable

import httpcore

_COALESCE_BYTES = 64 * 1024


class _Protocol(asyncio.Protocol):
  """Buffers what arrives; wakes the one reader waiting for it."""

  def __init__(self) -> None:
    self.transport: asyncio.Transport | None = None
    self.buffer = bytearray()
    self.eof = False
    self.error: BaseException | None = None
    self.waiter: asyncio.Future | None = None
    self.drain: asyncio.Future | None = None
    self.paused = False

  def connection_made(self, transport) -> None:
    self.transport = transport

  def data_received(self, data: bytes) -> None:
    self.buffer += data
    self._wake()

  def eof_received(self) -> bool:
    self.eof = True
    self._wake()
    return False  # let the transport close itself

  def connection_lost(self, exc) -> None:
    self.eof = True
    self.error = exc
    self._wake()
    self.resume_writing()

  def pause_writing(self) -> None:
    self.paused = True

  def resume_writing(self) -> None:
    self.paused = False
    if self.drain is not None and not self.drain.done():
      self.drain.set_result(None)

  def _wake(self) -> None:
    if self.waiter is not None and not self.waiter.done():
      self.waiter.set_result(None)


def _expire(future: asyncio.Future, exc_type: type) -> None:
  if not future.done():
    future.set_exception(exc_type())


class _Stream(httpcore.AsyncNetworkStream):

  def __init__(self, transport: asyncio.Transport, protocol: _Protocol):
    self._transport = transport
    self._protocol = protocol
    self._unsent: list[bytes] = []

  def _flush(self) -> None:
    data = b"".join(self._unsent) if len(self._unsent) > 1 else self._unsent[0]
    self._unsent = []
    if self._protocol.error is None and not self._transport.is_closing():
      self._transport.write(data)

  async def _wait(self, attr: str, timeout: float | None, exc_type: type) -> None:
    future = asyncio.get_running_loop().create_future()
    setattr(self._protocol, attr, future)
    timer = (
        None
        if timeout is None
        else future.get_loop().call_later(timeout, _expire, future, exc_type)
    )
    try:
      await future
    finally:
      setattr(self._protocol, attr, None)
      if timer is not None:
        timer.cancel()

  async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
    if self._unsent:
      self._flush()
    protocol = self._protocol
    if not protocol.buffer and not protocol.eof:
      await self._wait("waiter", timeout, httpcore.ReadTimeout)
    buffer = protocol.buffer
    if buffer:
      if len(buffer) <= max_bytes:
        protocol.buffer = bytearray()
        return bytes(buffer)
      data = bytes(buffer[:max_bytes])
      del buffer[:max_bytes]
      return data
    if protocol.error is not None:
      raise httpcore.ReadError(f"{type(protocol.error).__name__}: {protocol.error}")
    return b""

  async def write(self, buffer: bytes, timeout: float | None = None) -> None:
    """Small writes wait for the next read: httpcore writes a request's head and body separately
    and then reads the answer, so the two go out in one send (one syscall here, one read at the
    server). A large write, or one made while writing is paused, goes out at once."""
    if not buffer:
      return
    protocol = self._protocol
    if protocol.error is not None or self._transport.is_closing():
      raise httpcore.WriteError("connection closed")
    self._unsent.append(buffer)
    if len(buffer) < _COALESCE_BYTES and not protocol.paused:
      return
    self._flush()
    if protocol.paused:
      await self._wait("drain", timeout, httpcore.WriteTimeout)
      if protocol.error is not None:
        raise httpcore.WriteError(f"{type(protocol.error).__name__}: {protocol.error}")

  async def aclose(self) -> None:
    self._unsent = []
    self._transport.close()

  async def start_tls(
      self,
      ssl_context: ssl.SSLContext,
      server_hostname: str | None = None,
      timeout: float | None = None,
  ) -> "_Stream":
    loop = asyncio.get_running_loop()
    try:
      transport = await asyncio.wait_for(
          loop.start_tls(
              self._transport, self._protocol, ssl_context, server_hostname=server_hostname
          ),
          timeout,
      )
    except asyncio.TimeoutError:
      self._transport.abort()
      raise httpcore.ConnectTimeout("TLS handshake timed out") from None
    except (OSError, ssl.SSLError) as e:
      self._transport.abort()
      raise httpcore.ConnectError(f"{type(e).__name__}: {e}") from None
    self._protocol.transport = transport
    return _Stream(transport, self._protocol)

  def get_extra_info(self, info: str) -> Any:
    if info == "is_readable":  # asked of idle connections: has the server hung up (or sent junk)?
      return bool(self._protocol.buffer) or self._protocol.eof
    if info == "ssl_object":
      return self._transport.get_extra_info("ssl_object")
    if info == "client_addr":
      return self._transport.get_extra_info("sockname")
    if info == "server_addr":
      return self._transport.get_extra_info("peername")
    if info == "socket":
      return self._transport.get_extra_info("socket")
    return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
  """httpcore network backend on the running asyncio (or uvloop) loop, without anyio."""

  async def _connect(self, make, timeout: float | None, socket_options) -> _Stream:
    try:
      transport, protocol = await asyncio.wait_for(make(), timeout)
    except asyncio.TimeoutError:
      raise httpcore.ConnectTimeout("connect timed out") from None
    except OSError as e:
      raise httpcore.ConnectError(f"{type(e).__name__}: {e}") from None
    sock = transport.get_extra_info("socket")
    for option in socket_options or ():
      sock.setsockopt(*option)
    return _Stream(transport, protocol)

  async def connect_tcp(
      self,
      host: str,
      port: int,
      timeout: float | None = None,
      local_address: str | None = None,
      socket_options: Iterable | None = None,
  ) -> _Stream:
    loop = asyncio.get_running_loop()
    local = (local_address, 0) if local_address else None
    return await self._connect(
        lambda: loop.create_connection(_Protocol, host, port, local_addr=local),
        timeout,
        socket_options,
    )

  async def connect_unix_socket(
      self, path: str, timeout: float | None = None, socket_options: Iterable | None = None
  ) -> _Stream:
    loop = asyncio.get_running_loop()
    return await self._connect(
        lambda: loop.create_unix_connection(_Protocol, path), timeout, socket_options
    )

  async def sleep(self, seconds: float) -> None:
    await asyncio.sleep(seconds)


class ConnectionPool:
  """Keep-alive HTTP/1.1 connections to one origin; each carries one request at a time.

  `acquire()` never waits: the caller bounds how many requests are in flight (a semaphore), and
  that bounds how many connections exist. `release(conn)` returns a connection whose response was
  read to the end and closed; one that broke, or that the server asked to close, is dropped.
  """

  def __init__(
      self,
      origin: httpcore.Origin,
      *,
      ssl_context: ssl.SSLContext | None,
      keepalive_expiry: float = 5.0,
  ):
    self._origin = origin
    self._ssl_context = ssl_context
    self._keepalive_expiry = keepalive_expiry
    self._backend = AsyncioBackend()
    self._idle: list[httpcore.AsyncHTTPConnection] = []
    self._busy: set[httpcore.AsyncHTTPConnection] = set()
    self.opened = 0

  def acquire(self) -> httpcore.AsyncHTTPConnection:
    idle = self._idle
    while idle:
      conn = idle.pop()
      if conn.is_idle() and not conn.has_expired():
        self._busy.add(conn)
        return conn
      _close_soon(conn)
    conn = httpcore.AsyncHTTPConnection(
        self._origin,
        ssl_context=self._ssl_context,
        keepalive_expiry=self._keepalive_expiry,
        network_backend=self._backend,
    )
    self.opened += 1
    self._busy.add(conn)
    return conn

  def release(self, conn: httpcore.AsyncHTTPConnection) -> None:
    self._busy.discard(conn)
    if conn.is_idle() and not conn.is_closed():
      self._idle.append(conn)
    else:
      _close_soon(conn)

  def __len__(self) -> int:
    return len(self._idle) + len(self._busy)

  async def aclose(self) -> None:
    conns, self._idle, self._busy = self._idle + list(self._busy), [], set()
    await asyncio.gather(*(conn.aclose() for conn in conns), return_exceptions=True)


def _close_soon(conn: httpcore.AsyncHTTPConnection) -> None:
  # Closing a connection only closes its socket, but httpcore's aclose is a coroutine; run it
  # without making the caller wait (a fresh connection is already being handed out).
  try:
    asyncio.get_running_loop().create_task(conn.aclose())
  except RuntimeError:  # no loop: nothing is open any more
    pass
