"""A small HTTP/1.1 server on asyncio streams: keep-alive, Content-Length or chunked bodies, JSON,
server-sent events.

The standard library has no async HTTP server and the JSON API needs little of HTTP, so this is
the whole of it: parse a request, await the app, write its response, repeat on the connection.
A client gets `idle_timeout_s` to start its next request and `read_timeout_s` to finish sending
one; malformed requests get a 4xx and the connection is closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from http import HTTPStatus

MAX_BODY_BYTES = 32 << 20
MAX_HEADER_LINES = 100
MAX_LINE_BYTES = 16 << 10


@dataclasses.dataclass(frozen=True)
class Raw:
  """A non-JSON response: bytes, or a (sync or async) iterable of byte chunks sent as they come
  (chunked)."""

  body: bytes | Iterable[bytes] | AsyncIterable[bytes]
  content_type: str


# app(method, path, body) -> (status, JSON-serialisable payload or Raw)
App = Callable[[str, str, bytes], Awaitable[tuple[int, object]]]


class BadRequest(Exception):

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


async def _line(reader: asyncio.StreamReader) -> bytes:
  try:
    return await reader.readuntil(b"\n")
  except asyncio.LimitOverrunError:
    raise BadRequest(431, "header line too long") from None
  except asyncio.IncompleteReadError as e:
    return e.partial


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
  chunks, total = [], 0
  while True:
    line = await _line(reader)
    if not line.endswith(b"\n"):
      raise asyncio.IncompleteReadError(line, None)
    try:
      size = int(line.split(b";")[0].strip(), 16)
    except ValueError:
      raise BadRequest(400, f"malformed chunk size line {line[:40]!r}") from None
    if size < 0:
      raise BadRequest(400, "negative chunk size")
    if size == 0:
      while (await _line(reader)) not in (b"\r\n", b"\n", b""):
        pass  # trailers
      return b"".join(chunks)
    total += size
    if total > MAX_BODY_BYTES:
      raise BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")
    chunks.append(await reader.readexactly(size))
    if await reader.readexactly(2) != b"\r\n":
      raise BadRequest(400, "chunk data not followed by CRLF")


async def _read_body(reader, writer, headers: dict[str, str]) -> bytes:
  if headers.get("expect", "").lower() == "100-continue":
    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
  encoding = headers.get("transfer-encoding", "").lower()
  if encoding:
    if encoding != "chunked":
      raise BadRequest(501, f"Transfer-Encoding {encoding!r} is not supported")
    return await _read_chunked(reader)
  try:
    length = int(headers.get("content-length", "0"))
  except ValueError:
    raise BadRequest(400, "bad Content-Length") from None
  if length < 0:
    raise BadRequest(400, "bad Content-Length")
  if length > MAX_BODY_BYTES:
    raise BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")
  return await reader.readexactly(length) if length > 0 else b""


async def _read_rest(reader, writer, line: bytes):
  parts = line.decode("latin-1").split()
  if len(parts) != 3 or not parts[2].startswith("HTTP/"):
    raise BadRequest(400, "malformed request line")
  method, target, version = parts
  headers: dict[str, str] = {}
  for _ in range(MAX_HEADER_LINES):
    raw = await _line(reader)
    if raw in (b"\r\n", b"\n"):
      break
    if not raw.endswith(b"\n"):
      raise asyncio.IncompleteReadError(raw, None)
    name, colon, value = raw.decode("latin-1").partition(":")
    if not colon or not name.strip() or name != name.strip():
      raise BadRequest(400, f"malformed header line {raw[:40]!r}")
    headers[name.lower()] = value.strip()
  else:
    raise BadRequest(431, "too many header lines")
  body = await _read_body(reader, writer, headers)
  return method.upper(), target.split("?", 1)[0], version, headers, body


def _head(status: int, content_type: str, keep_alive: bool, length: int | None) -> bytes:
  framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
  extra = "Cache-Control: no-cache\r\n" if content_type.startswith("text/event-stream") else ""
  return (
      f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
      f"{framing}\r\n{extra}Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
  ).encode("latin-1")


async def _respond(writer, status: int, payload, keep_alive: bool) -> None:
  if isinstance(payload, Raw) and hasattr(payload.body, "__aiter__"):
    writer.write(_head(status, payload.content_type, keep_alive, None))
    try:
      async for chunk in payload.body:
        if chunk:
          writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
          await writer.drain()
    finally:
      await payload.body.aclose()  # a client that left still releases what the stream holds
    writer.write(b"0\r\n\r\n")
  elif isinstance(payload, Raw) and not isinstance(payload.body, bytes):
    writer.write(_head(status, payload.content_type, keep_alive, None))
    for chunk in payload.body:
      if chunk:
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
  else:
    if isinstance(payload, Raw):
      body, kind = payload.body, payload.content_type
    else:
      body, kind = json.dumps(payload, ensure_ascii=False).encode(), "application/json"
    writer.write(_head(status, kind, keep_alive, len(body)) + body)
  await writer.drain()


def error_payload(message: str, *, kind: str = "invalid_request_error", param=None, code=None):
  return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def serve_connection(
    app: App,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    read_timeout_s: float = 60.0,
    idle_timeout_s: float = 300.0,
):
  try:
    while True:
      try:
        line = await asyncio.wait_for(_line(reader), idle_timeout_s)
      except asyncio.TimeoutError:
        return  # an idle keep-alive connection: close it quietly
      if not line.strip():
        return
      try:
        request = await asyncio.wait_for(_read_rest(reader, writer, line), read_timeout_s)
      except BadRequest as e:
        await _respond(writer, e.status, error_payload(str(e)), keep_alive=False)
        return
      except asyncio.TimeoutError:
        message = f"request not received within {read_timeout_s:g} s"
        await _respond(writer, 408, error_payload(message), keep_alive=False)
        return
      method, path, version, headers, body = request
      keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
      status, payload = await app(method, path, body)
      await _respond(writer, status, payload, keep_alive)
      if not keep_alive:
        return
  except (asyncio.IncompleteReadError, ConnectionError):
    pass  # the client went away mid-request; nothing to answer
  finally:
    writer.close()
