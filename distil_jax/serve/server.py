"""The OpenAI-compatible app (`/v1/chat/completions`, `/v1/completions`, `/v1/models`) and a way to
run it: in the foreground (`serve_forever`) or on a background thread (`start_server`)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading

from distil_jax.generate.chat import stop_ids_for
from distil_jax.generate.engine import Generator
from distil_jax.serve import protocol
from distil_jax.serve.batcher import Batcher, BatchStats
from distil_jax.serve.http import error_payload, serve_connection

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    served_model_names: tuple[str, ...] = ("distil-jax",)
    strict_model_name: bool = False  # True: a `model` not in served_model_names is a 404
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    default_max_tokens: int = 512
    max_batch: int = 32
    max_wait_s: float = 0.01


class App:
    def __init__(self, generator: Generator, tokenizer, config: ServeConfig):
        self.tokenizer = tokenizer
        self.config = config
        self.max_len = config.max_model_len or generator.config.max_position_embeddings
        self.batcher = Batcher(generator, max_batch=config.max_batch, max_wait_s=config.max_wait_s)

    async def __call__(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        routes = {"/v1/chat/completions": ("POST", self._chat),
                  "/v1/completions": ("POST", self._completion),
                  "/v1/models": ("GET", self._models), "/health": ("GET", self._health)}
        if path not in routes:
            return 404, error_payload(f"no route {path}", code="not_found")
        want, handler = routes[path]
        if method != want:
            return 405, error_payload(f"{path} takes {want}, not {method}")
        try:
            data = json.loads(body) if body else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return 400, error_payload(f"body is not valid JSON: {e}")
        try:
            return 200, await handler(data)
        except protocol.RequestError as e:
            return e.status, error_payload(str(e), param=e.param, code=e.code)
        except Exception as e:  # noqa: BLE001 - a failed request must not kill the server
            log.exception("request to %s failed", path)
            return 500, error_payload(f"internal error: {type(e).__name__}: {e}", kind="server_error")

    def _parse_args(self):
        c = self.config
        return (self.tokenizer, c.served_model_names, self.max_len, c.default_max_tokens,
                c.strict_model_name)

    async def _chat(self, body):
        job = protocol.parse_chat(body, *self._parse_args())
        return protocol.chat_response(job, await self.batcher.submit(job.rows), self.tokenizer)

    async def _completion(self, body):
        job = protocol.parse_completion(body, *self._parse_args())
        return protocol.completion_response(job, await self.batcher.submit(job.rows), self.tokenizer)

    async def _models(self, body):
        return protocol.models_response(self.config.served_model_names, self.max_len)

    async def _health(self, body):
        return {"status": "ok"}


async def _serve(app: App, host: str, port: int, ready=None, stop: asyncio.Event | None = None):
    app.batcher.start()
    server = await asyncio.start_server(lambda r, w: serve_connection(app, r, w), host, port,
                                        backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready(bound)
    try:
        async with server:
            if stop is None:
                await server.serve_forever()
            else:
                await stop.wait()
    finally:
        await app.batcher.stop()


def make_app(model, tokenizer, config: ServeConfig = ServeConfig()) -> App:
    generator = model if isinstance(model, Generator) else Generator(
        model, stop_ids=stop_ids_for(tokenizer))
    return App(generator, tokenizer, config)


def serve_forever(model, tokenizer, host: str = "127.0.0.1", port: int = 8000,
                  config: ServeConfig = ServeConfig()) -> None:
    app = make_app(model, tokenizer, config)
    ready = lambda p: print(f"serving {list(config.served_model_names)} on http://{host}:{p}/v1",
                            flush=True)
    asyncio.run(_serve(app, host, port, ready))


class ServerHandle:
    """A server running on its own thread and event loop. `.url` ends in /v1."""

    def __init__(self, app: App, host: str, port: int):
        self.app = app
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        bound: list[int] = []
        started = threading.Event()
        errors: list[BaseException] = []

        def run():
            asyncio.set_event_loop(self._loop)
            self._stop = asyncio.Event()
            try:
                self._loop.run_until_complete(_serve(
                    app, host, port, lambda p: (bound.append(p), started.set()), self._stop))
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                errors.append(e)
                started.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="distil-jax-serve", daemon=True)
        self._thread.start()
        started.wait()
        if errors:
            raise errors[0]
        self.host, self.port = host, bound[0]
        self.url = f"http://{host}:{self.port}/v1"

    @property
    def stats(self) -> BatchStats:
        return self.app.batcher.stats

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_server(model, tokenizer, host: str = "127.0.0.1", port: int = 0,
                 config: ServeConfig = ServeConfig()) -> ServerHandle:
    """Starts serving on a background thread; `port=0` picks a free port (see `.url`)."""
    return ServerHandle(make_app(model, tokenizer, config), host, port)
