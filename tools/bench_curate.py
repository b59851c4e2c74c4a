"""Benchmark of the teacher client: requests/s and client CPU per request against a 1 s loopback server.

  .venv/bin/python tools/bench_curate.py [--requests 6144] [--in_flight 512] [--delay_s 1]

The server runs in its own process (distil_jax.curate.testing.fault_server, uvloop). Each layout sends
distinct requests through TeacherClient with the fsync'd journal on. Limit = in_flight / delay_s.
Prints figures; asserts nothing about time.
"""
from __future__ import annotations

import argparse
import asyncio
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
from distil_jax.curate.journal import Journal  # noqa: E402


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


async def measure(base_url: str, *, requests: int, in_flight: int, pool_size: int, journal_dir: str) -> dict:
    endpoint = EndpointConfig(name="bench", base_url=base_url, model="m", api_key_env="", max_in_flight=in_flight,
                              pool_size=pool_size, requests_per_minute=0.0, tokens_per_minute=0.0, timeout_s=60.0,
                              max_attempts=3, max_retry_s=60.0, backoff_base_s=0.1, backoff_max_s=1.0)
    journal = Journal.open(os.path.join(journal_dir, f"journal-{pool_size}.jsonl"))
    done_at: list[float] = []

    async def one(client, i):
        out = await client.complete([{"role": "user", "content": f"benchmark request {i}"}], {"max_tokens": 8})
        done_at.append(time.monotonic())
        return isinstance(out, Completion)

    async with TeacherClient(endpoint, journal) as client:
        cpu0, t0 = client_cpu_s(), time.monotonic()
        ok = await asyncio.gather(*(one(client, i) for i in range(requests)))
        wall, cpu = time.monotonic() - t0, client_cpu_s() - cpu0
    journal.close()
    # Steady state: skip the first 2 s (pool fill, first answers) and the last 1 s (drain).
    window = [t for t in done_at if t0 + 2.0 <= t <= done_at[-1] - 1.0]
    steady = len(window) / max(window[-1] - window[0], 1e-9) if len(window) > 1 else float("nan")
    return {"ok": sum(ok), "wall_s": wall, "overall_rps": requests / wall, "steady_rps": steady,
            "cpu_ms_per_request": 1000 * cpu / requests, "fsyncs": journal.fsyncs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6144)
    parser.add_argument("--in_flight", type=int, default=512)
    parser.add_argument("--delay_s", type=float, default=1.0)
    parser.add_argument("--pool_sizes", default="8,16,512", help="connections per AsyncClient pool, one run each")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "distil_jax.curate.testing.fault_server", "--port", str(port),
                               "--delay_s", str(args.delay_s)], cwd=REPO, stdout=subprocess.DEVNULL)
    limit = args.in_flight / args.delay_s
    try:
        wait_for_port(port)
        print(f"{args.requests} requests, {args.in_flight} in flight, server delay {args.delay_s:g} s, "
              f"limit {limit:.0f} req/s, client loop {loop_name}, journal on, cores {os.cpu_count()}")
        print(f"{'layout':<22} {'ok':>6} {'wall s':>7} {'overall/s':>10} {'steady/s':>9} {'of limit':>9} "
              f"{'CPU ms/req':>11} {'fsyncs':>7}")
        with tempfile.TemporaryDirectory() as journal_dir:
            for pool_size in (int(p) for p in args.pool_sizes.split(",")):
                r = asyncio.run(measure(f"http://127.0.0.1:{port}/v1", requests=args.requests,
                                        in_flight=args.in_flight, pool_size=pool_size, journal_dir=journal_dir))
                pools = -(-args.in_flight // pool_size)
                layout = f"{pools} pool(s) of {pool_size}"
                print(f"{layout:<22} {r['ok']:>6} {r['wall_s']:>7.2f} {r['overall_rps']:>10.1f} "
                      f"{r['steady_rps']:>9.1f} {100 * r['steady_rps'] / limit:>8.1f}% "
                      f"{r['cpu_ms_per_request']:>11.2f} {r['fsyncs']:>7}")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
