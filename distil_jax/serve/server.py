"""The OpenAI-compatible app (`/v1/chat/completions`, `/v1/completions`, `/v1/models[/{id}]`,
`/health`, `/metrics`) and a way to run it: in the foreground (`serve_forever`, which drains on
SIGTERM) or on a background thread (`start_server`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import threading
import time

from distil_jax.generate.chat import stop_ids_for
from distil_jax.generate.engine import Generator
from distil_jax.generate.sampling import Sampling
from distil_jax.serve import json_mode, live, protocol, responses
from distil_jax.serve.batcher import Batcher, BatchStats
from distil_jax.serve.continuous import ContinuousBatcher
from distil_jax.serve.http import Raw, error_payload, serve_connection
from distil_jax.serve.metrics import Metrics

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServeConfig:
  served_model_names: tuple[str, ...] = ("distil-jax",)
  strict_model_name: bool = False  # True: a `model` not in served_model_names is a 404
  max_model_len: int | None = None  # default: the model's max_position_embeddings
  # A request without max_tokens gets this, capped to the rest of the context (None: all of it;
  # the KV cache is sized by the request, so "all" is costly on long-context models).
  default_max_tokens: int | None = 512
  default_sampling: Sampling = Sampling(temperature=1.0)  # the checkpoint's generation_config
  max_batch: int = 32  # static: rows a batch; continuous: slots of the KV cache
  max_wait_s: float = 0.01  # static batching only
  continuous: bool = False  # new requests join the running decode between steps
  read_timeout_s: float = 60.0  # to finish sending a request once started
  idle_timeout_s: float = 300.0  # for a keep-alive connection to start its next request


class App:

  def __init__(self, generator: Generator, tokenizer, config: ServeConfig):
    self.tokenizer = tokenizer
    self.config = config
    positions = generator.config.max_position_embeddings
    if config.max_model_len is not None and not 0 < config.max_model_len <= positions:
      raise ValueError(
          f"--max_model_len {config.max_model_len} is beyond the model's "
          f"{positions} positions (max_position_embeddings)"
      )
    self.max_len = config.max_model_len or positions
    self.defaults = protocol.Defaults(
        config.default_sampling, config.default_max_tokens, self.max_len
    )
    if config.continuous:
      self.batcher = ContinuousBatcher(generator, slots=config.max_batch, max_len=self.max_len)
    else:
      self.batcher = Batcher(generator, max_batch=config.max_batch, max_wait_s=config.max_wait_s)
    self.json_table = json_mode.LazyTable(tokenizer, generator.config.vocab_size)
    self.metrics = Metrics()
    self.draining = False
    self.in_flight = 0

  async def __call__(self, method: str, path: str, body: bytes) -> tuple[int, object]:
    started = time.perf_counter()
    status, payload = await self._route(method, path, body)
    self.metrics.request(path, status, time.perf_counter() - started)
    return status, payload

  async def _route(self, method, path, body):
    routes = {
        "/v1/chat/completions": ("POST", self._chat),
        "/v1/completions": ("POST", self._completion),
        "/v1/models": ("GET", self._models),
        "/health": ("GET", self._health),
        "/metrics": ("GET", self._metrics),
    }
    if path.startswith("/v1/models/"):
      routes[path] = ("GET", self._model)
    if path not in routes:
      return 404, error_payload(f"no route {path}", code="not_found")
    want, handler = routes[path]
    if method != want:
      return 405, error_payload(f"{path} takes {want}, not {method}")
    if want == "GET":
      return await handler(path)
    if self.draining:
      return 503, error_payload("the server is shutting down", kind="server_error")
    try:
      data = json.loads(body) if body else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      return 400, error_payload(f"body is not valid JSON: {e}")
    if bad := protocol.unencodable_field(data):
      return 400, error_payload(f"{bad}: not valid Unicode (a lone surrogate?)", param=bad)
    self.in_flight += 1
    try:
      return 200, await handler(data)
    except protocol.RequestError as e:
      return e.status, error_payload(str(e), param=e.param, code=e.code)
    except Exception as e:  # noqa: BLE001 - a failed request must not kill the server
      log.exception("request to %s failed", path)
      return 500, error_payload(f"internal error: {type(e).__name__}: {e}", kind="server_error")
    finally:
      self.in_flight -= 1

  def _parse_args(self):
    c = self.config
    return self.tokenizer, c.served_model_names, self.defaults, c.strict_model_name

  async def _run(self, job: protocol.Job, whole):
    if isinstance(self.batcher, ContinuousBatcher) and live.can_stream_live(job):
      self.in_flight += 1  # held until the stream ends

      def on_end(prompt_tokens: int, completion_tokens: int) -> None:
        self.in_flight -= 1
        self.metrics.tokens(prompt_tokens, completion_tokens)

      return Raw(live.live_events(job, self.tokenizer, self.batcher, on_end), "text/event-stream")
    answers = await self.batcher.submit(job.rows)
    self.metrics.tokens(
        sum(len(r.prompt) for r in job.rows[:: job.n]),
        sum(len(a.completion.tokens) for a in answers),
    )
    if job.stream:
      return Raw(responses.stream_events(job, answers, self.tokenizer), "text/event-stream")
    return whole(job, answers, self.tokenizer)

  async def _chat(self, body):
    job = protocol.parse_chat(body, *self._parse_args())
    if job.json_mode:
      try:
        table = await self.json_table.get()
      except ValueError as e:  # a tokenizer JSON mode cannot follow
        raise protocol.RequestError(str(e), param="response_format") from None
      job = dataclasses.replace(
          job, rows=[dataclasses.replace(r, json_table=table) for r in job.rows]
      )
    return await self._run(job, responses.chat_response)

  async def _completion(self, body):
    job = protocol.parse_completion(body, *self._parse_args())
    return await self._run(job, responses.completion_response)

  async def _models(self, path):
    return 200, responses.models_response(self.config.served_model_names, self.max_len)

  async def _model(self, path):
    name = path[len("/v1/models/") :]
    if name not in self.config.served_model_names:
      return 404, error_payload(
          f"The model '{name}' does not exist", param="model", code="model_not_found"
      )
    return 200, responses.model_card(name, self.max_len)

  async def _health(self, path):
    if self.draining:
      return 503, {"status": "draining"}
    return 200, {"status": "ok"}

  async def _metrics(self, path):
    text = self.metrics.render(
        queue_depth=self.batcher.queue_depth, in_flight=self.in_flight, stats=self.batcher.stats
    )
    return 200, Raw(text.encode(), "text/plain; version=0.0.4")

  async def drain(self, poll_s: float = 0.02) -> None:
    """Refuse new generation requests (503) and return once those in flight are answered."""
    self.draining = True
    while self.in_flight:
      await asyncio.sleep(poll_s)


async def _serve(
    app: App,
    host: str,
    port: int,
    ready=None,
    stop: asyncio.Event | None = None,
    on_signals: bool = False,
):
  app.batcher.start()
  c = app.config
  connections: set[asyncio.Task] = set()

  async def connection(reader, writer):
    task = asyncio.current_task()
    connections.add(task)
    try:
      await serve_connection(
          app, reader, writer, read_timeout_s=c.read_timeout_s, idle_timeout_s=c.idle_timeout_s
      )
    finally:
      connections.discard(task)

  server = await asyncio.start_server(connection, host, port, backlog=1024)
  stop = stop or asyncio.Event()
  loop = asyncio.get_running_loop()
  if on_signals:

    async def drain_then_stop():
      log.warning("draining: %d request(s) in flight", app.in_flight)
      await app.drain()
      stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
      loop.add_signal_handler(sig, lambda: loop.create_task(drain_then_stop()))
  bound = server.sockets[0].getsockname()[1]
  if ready is not None:
    ready(bound)
  try:
    async with server:
      await stop.wait()
      await asyncio.sleep(0.05)  # let the last responses flush
      server.close()
      for task in list(connections):  # idle keep-alive connections
        task.cancel()
      await asyncio.gather(*connections, return_exceptions=True)
  finally:
    await app.batcher.stop()


def make_app(model, tokenizer, config: ServeConfig = ServeConfig()) -> App:
  generator = (
      model if isinstance(model, Generator) else Generator(model, stop_ids=stop_ids_for(tokenizer))
  )
  return App(generator, tokenizer, config)


def serve_forever(
    model, tokenizer, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig = ServeConfig()
) -> None:
  """Serves until SIGTERM or SIGINT, then answers the requests in flight and returns."""
  app = make_app(model, tokenizer, config)
  ready = lambda p: print(
      f"serving {list(config.served_model_names)} on http://{host}:{p}/v1", flush=True
  )
  asyncio.run(_serve(app, host, port, ready, on_signals=True))


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
        self._loop.run_until_complete(
            _serve(app, host, port, lambda p: (bound.append(p), started.set()), self._stop)
        )
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


def start_server(
    model, tokenizer, host: str = "127.0.0.1", port: int = 0, config: ServeConfig = ServeConfig()
) -> ServerHandle:
  """Starts serving on a background thread; `port=0` picks a free port (see `.url`)."""
  return ServerHandle(make_app(model, tokenizer, config), host, port)
