"""A small HTTP/1.1 server on asyncio streams: keep-alive, Content-Length or chunked bodies, JSON.

The standard library has no async HTTP server and the JSON API needs little of HTTP, so this is
the whole of it: parse a request, await the app, write one JSON response, repeat on the connection.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus

MAX_BODY_BYTES = 32 << 20
MAX_HEADER_LINES = 100

# app(method, path, body) -> (status, JSON-serialisable payload)
App = Callable[[str, str, bytes], Awaitable[tuple[int, object]]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks, total = [], 0
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadRequest(400, "bad Content-Length") from None
    if length > MAX_BODY_BYTES:
        raise BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")
    return await reader.readexactly(length) if length > 0 else b""


async def _read_request(reader: asyncio.StreamReader):
    """(method, path, version, headers, body), or None when the client closed the connection."""
    line = await reader.readline()
    if not line.strip():
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise BadRequest(431, "too many header lines")
    body = await _read_body(reader, headers)
    return method.upper(), target.split("?", 1)[0], version, headers, body


def _response(status: int, payload: object, keep_alive: bool) -> bytes:
    body = json.dumps(payload, ensure_ascii=False).encode()
    reason = HTTPStatus(status).phrase
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return head.encode("latin-1") + body


def error_payload(message: str, *, kind: str = "invalid_request_error", param=None, code=None):
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def serve_connection(app: App, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    try:
        while True:
            try:
                request = await _read_request(reader)
            except BadRequest as e:
                writer.write(_response(e.status, error_payload(str(e)), keep_alive=False))
                await writer.drain()
                return
            if request is None:
                return
            method, path, version, headers, body = request
            keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            status, payload = await app(method, path, body)
            writer.write(_response(status, payload, keep_alive))
            await writer.drain()
            if not keep_alive:
                return
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass  # the client went away or sent garbage mid-request; nothing to answer
    finally:
        writer.close()
