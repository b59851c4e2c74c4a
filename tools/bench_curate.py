"""Benchmark of the teacher client: requests/s and client CPU per request against a 1 s loopback server.

  .venv/bin/python tools/bench_curate.py [--requests 10240] [--in_flight 512] [--delay_s 1]
                                         [--httpx_pool_sizes 8,16]

The server runs in its own process (distil_jax.curate.testing.fault_server, uvloop, timers rather
than a task per request) and its CPU is reported too, since it shares the machine with the client.
`TeacherClient` sends distinct requests with the fsync'd journal on (group commits). Limit =
in_flight / delay_s. `--httpx_pool_sizes` adds reference rows: the same load through plain
`httpx.AsyncClient` pools (N clients of P connections, least-loaded first) with the same journal.

Measurement: `in_flight` workers each send one request after another; worker w starts at
w * delay_s / in_flight, so answers arrive spread evenly rather than in synchronized waves of
`in_flight` (with waves, a window's count depends on how many wave edges it happens to hold).
steady/s counts the answers inside a fixed window: from one delay after the ramp until one delay
before the last answer. Client CPU per request = this process's user+system CPU over the whole run
(connection set-up and the journal thread included) / requests. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from distil_jax.curate.client import Completion, TeacherClient  # noqa: E402
from distil_jax.curate.config import EndpointConfig  # noqa: E402
from distil_jax.curate.journal import Journal, request_key  # noqa: E402


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 15.0) -> None:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
      return
    except OSError:
      time.sleep(0.05)
  raise RuntimeError(f"server on port {port} did not start")


def client_cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float | None:
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError):
    return None


def messages_for(i: int) -> list[dict]:
  return [{"role": "user", "content": f"benchmark request {i}"}]


async def drive(send, *, requests: int, in_flight: int, delay_s: float) -> dict:
  """`in_flight` staggered workers; returns timings. `send(i)` -> True when request i succeeded."""
  done_at: list[float] = []
  ok = 0
  next_index = 0
  t0 = time.monotonic()

  async def worker(w: int) -> None:
    nonlocal ok, next_index
    await asyncio.sleep(w * delay_s / in_flight)
    while next_index < requests:
      i, next_index = next_index, next_index + 1
      succeeded = await send(i)
      ok += bool(succeeded)
      done_at.append(time.monotonic())

  await asyncio.gather(*(worker(w) for w in range(in_flight)))
  wall = time.monotonic() - t0
  start, end = t0 + 2 * delay_s, done_at[-1] - delay_s
  in_window = sum(1 for t in done_at if start <= t < end)
  steady = in_window / (end - start) if end - start >= delay_s else float("nan")
  return {"ok": ok, "wall_s": wall, "overall_rps": requests / wall, "steady_rps": steady}


def endpoint_for(base_url: str, in_flight: int) -> EndpointConfig:
  return EndpointConfig(
      name="bench",
      base_url=base_url,
      model="m",
      api_key_env="",
      max_in_flight=in_flight,
      requests_per_minute=0.0,
      tokens_per_minute=0.0,
      timeout_s=60.0,
      max_attempts=3,
      max_retry_s=60.0,
      backoff_base_s=0.1,
      backoff_max_s=1.0,
  )


async def measure_client(
    base_url: str, journal: Journal, *, requests: int, in_flight: int, delay_s: float
) -> dict:
  async with TeacherClient(endpoint_for(base_url, in_flight), journal) as client:

    async def send(i: int) -> bool:
      return isinstance(await client.complete(messages_for(i), {"max_tokens": 8}), Completion)

    r = await drive(send, requests=requests, in_flight=in_flight, delay_s=delay_s)
  r["fsyncs"], r["connections"] = journal.fsyncs, client.connections_opened
  return r


async def measure_httpx(
    base_url: str,
    journal: Journal,
    *,
    requests: int,
    in_flight: int,
    delay_s: float,
    pool_size: int,
) -> dict:
  """Reference: the same load through plain httpx.AsyncClient pools (no retries, no rate limits)."""
  import httpx

  num = -(-in_flight // pool_size)
  limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
  pools = [httpx.AsyncClient(limits=limits, timeout=60.0, trust_env=False) for _ in range(num)]
  load = [0] * num
  url = base_url + "/chat/completions"

  async def send(i: int) -> bool:
    messages, sampling = messages_for(i), {"max_tokens": 8}
    key = request_key(base_url=base_url, model="m", messages=messages, sampling=sampling)
    body = json.dumps({"model": "m", "messages": messages, **sampling}, ensure_ascii=False).encode()
    index = min(range(num), key=load.__getitem__)
    load[index] += 1
    try:
      response = await pools[index].post(
          url,
          content=body,
          headers={"Content-Type": "application/json", "X-Client-Request-Id": key},
      )
    finally:
      load[index] -= 1
    data = response.json()
    await journal.append(
        {"key": key, "kind": "completion", "content": data["choices"][0]["message"]["content"]}
    )
    return response.status_code == 200

  try:
    r = await drive(send, requests=requests, in_flight=in_flight, delay_s=delay_s)
  finally:
    await asyncio.gather(*(p.aclose() for p in pools))
  r["fsyncs"], r["connections"] = journal.fsyncs, num * pool_size
  return r


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--requests", type=int, default=10240)
  parser.add_argument("--in_flight", type=int, default=512)
  parser.add_argument("--delay_s", type=float, default=1.0)
  parser.add_argument(
      "--httpx_pool_sizes",
      default="",
      help="reference rows: plain httpx.AsyncClient pools of " "these sizes, e.g. 8,16",
  )
  parser.add_argument("--repeats", type=int, default=1, help="TeacherClient runs")
  args = parser.parse_args()
  try:
    import uvloop

    uvloop.install()
    loop_name = "uvloop"
  except ImportError:
    loop_name = "asyncio"
  port = free_port()
  server = subprocess.Popen(
      [
          sys.executable,
          "-m",
          "distil_jax.curate.testing.fault_server",
          "--port",
          str(port),
          "--delay_s",
          str(args.delay_s),
      ],
      cwd=REPO,
      stdout=subprocess.DEVNULL,
  )
  limit = args.in_flight / args.delay_s
  base_url = f"http://127.0.0.1:{port}/v1"
  runs = [("TeacherClient", None)] * args.repeats
  runs += [
      (f"httpx {-(-args.in_flight // int(p))} pools of {p}", int(p))
      for p in args.httpx_pool_sizes.split(",")
      if p
  ]
  try:
    wait_for_port(port)
    print(
        f"{args.requests} requests, {args.in_flight} in flight, server delay {args.delay_s:g} s, "
        f"limit {limit:.0f} req/s, client loop {loop_name}, journal on (fsync), cores {os.cpu_count()}"
    )
    print(
        f"{'layout':<22} {'ok':>6} {'wall s':>7} {'overall/s':>10} {'steady/s':>9} {'of limit':>9} "
        f"{'client CPU':>11} {'server CPU':>11} {'fsyncs':>7} {'conns':>6}  load avg (1 min, before/after)"
    )
    print(f"{'':<22} {'':>6} {'':>7} {'':>10} {'':>9} {'':>9} {'ms/req':>11} {'ms/req':>11}")
    with tempfile.TemporaryDirectory() as journal_dir:
      for n, (layout, pool_size) in enumerate(runs):
        journal = Journal.open(os.path.join(journal_dir, f"journal-{n}.jsonl"))
        load0 = os.getloadavg()[0]
        gc.collect()
        cpu0, server0 = client_cpu_s(), process_cpu_s(server.pid)
        kwargs = dict(requests=args.requests, in_flight=args.in_flight, delay_s=args.delay_s)
        if pool_size is None:
          r = asyncio.run(measure_client(base_url, journal, **kwargs))
        else:
          r = asyncio.run(measure_httpx(base_url, journal, pool_size=pool_size, **kwargs))
        cpu, server1 = client_cpu_s() - cpu0, process_cpu_s(server.pid)
        journal.close()
        server_ms = (
            f"{1000 * (server1 - server0) / args.requests:>11.2f}"
            if server0 is not None and server1 is not None
            else f"{'n/a':>11}"
        )
        print(
            f"{layout:<22} {r['ok']:>6} {r['wall_s']:>7.2f} {r['overall_rps']:>10.1f} "
            f"{r['steady_rps']:>9.1f} {100 * r['steady_rps'] / limit:>8.1f}% "
            f"{1000 * cpu / args.requests:>11.2f} {server_ms} {r['fsyncs']:>7} {r['connections']:>6}  "
            f"{load0:.2f}/{os.getloadavg()[0]:.2f}",
            flush=True,
        )
  finally:
    server.kill()
    server.wait()


if __name__ == "__main__":
  main()
