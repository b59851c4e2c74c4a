"""Load benchmark of `distil-jax serve`: a bounded number of concurrent clients over loopback.

    PYTHONPATH=$PWD python tools/bench_serve.py                     # tiny model on CPU
    PYTHONPATH=$PWD python tools/bench_serve.py --shape qwen2p5_0p5b --clients 32 --requests 256

Each client sends chat requests back to back (greedy, `--max_tokens` new tokens, no stop token
reachable so every answer has the full length) until `--requests` are answered. Prints requests/s,
new tokens/s, time to first token (first streamed content chunk; with `--no_stream` the whole
answer) and p50/p99 latency. Compilation happens in an untimed warm-up of every batch size.

To compare with another version of the server, run this file with that version first on the
path, e.g. the static-batch server before SSE streaming existed:
    git archive be30437 | tar -x -C /tmp/old && PYTHONPATH=/tmp/old python tools/bench_serve.py --no_stream
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time


def _model(shape: str):
  import jax
  import jax.numpy as jnp
  from distil_jax.model import ModelConfig, create_model
  from distil_jax.sharding import MeshConfig, make_mesh

  dtype = jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  if shape == "tiny":  # the real vocabulary, so the real tokenizer applies
    cfg = ModelConfig.tiny(vocab_size=151936, param_dtype=dtype, compute_dtype=dtype)
  else:
    cfg = getattr(ModelConfig, shape)(param_dtype=dtype, compute_dtype=dtype)
  return create_model(cfg, make_mesh(MeshConfig(data=1), devices=jax.devices()[:1]))


async def _one(client, url, body, stream: bool):
  started = time.perf_counter()
  first = None
  if not stream:
    r = await client.post(url, json=body)
    r.raise_for_status()
    done = time.perf_counter()
    return done - started, done - started, r.json()["usage"]["completion_tokens"]
  tokens = 0
  async with client.stream(
      "POST", url, json={**body, "stream": True, "stream_options": {"include_usage": True}}
  ) as r:
    r.raise_for_status()
    async for line in r.aiter_lines():
      if not line.startswith("data: ") or line == "data: [DONE]":
        continue
      chunk = json.loads(line[6:])
      if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
        first = time.perf_counter()
      if chunk.get("usage"):
        tokens = chunk["usage"]["completion_tokens"]
  done = time.perf_counter()
  return (first or done) - started, done - started, tokens


async def _load(
    url, clients: int, requests: int, max_tokens: int, stream: bool, mixed: bool = False
):
  import httpx

  length = lambda i: max(1, max_tokens // 8) if mixed and i % 2 else max_tokens
  body = lambda i: {
      "model": "bench",
      "temperature": 0,
      "max_tokens": length(i),
      "messages": [
          {"role": "user", "content": f"Request {i}: tell me a story about a distilled model."}
      ],
  }
  results, next_id = [], iter(range(requests))

  async def worker(client):
    for i in next_id:
      results.append(await _one(client, url, body(i), stream))

  limits = httpx.Limits(max_connections=clients)
  async with httpx.AsyncClient(timeout=600, limits=limits) as client:
    started = time.perf_counter()
    await asyncio.gather(*(worker(client) for _ in range(clients)))
    return results, time.perf_counter() - started


def _pct(values, q):
  values = sorted(values)
  return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", default="tiny", help="tiny or a ModelConfig constructor name")
  parser.add_argument("--clients", type=int, default=8)
  parser.add_argument("--requests", type=int, default=64)
  parser.add_argument("--max_tokens", type=int, default=32)
  parser.add_argument("--max_batch", type=int, default=32)
  parser.add_argument("--max_wait_ms", type=float, default=10.0)
  parser.add_argument("--no_stream", action="store_true", help="for servers without SSE")
  parser.add_argument("--continuous", action="store_true", help="continuous batching")
  parser.add_argument(
      "--mixed",
      action="store_true",
      help="every other request asks for max_tokens / 8 (uneven lengths)",
  )
  parser.add_argument(
      "--max_model_len", type=int, default=None, help="with --continuous: positions a slot holds"
  )
  args = parser.parse_args()

  import jax
  from distil_jax.serve import ServeConfig, start_server
  from distil_jax.tokenizer import load_tokenizer

  # A generator without stop ids: every answer runs to max_tokens, so runs compare equal work.
  from distil_jax.generate.engine import Generator

  extra = {"continuous": True, "max_model_len": args.max_model_len} if args.continuous else {}
  config = ServeConfig(
      served_model_names=("bench",),
      max_batch=args.max_batch,
      max_wait_s=args.max_wait_ms / 1000,
      **extra,
  )
  with start_server(Generator(_model(args.shape)), load_tokenizer(), config=config) as server:
    url = f"{server.url}/chat/completions"
    batch = 1
    while batch <= min(args.clients, args.max_batch):  # compile every batch bucket
      asyncio.run(_load(url, batch, batch, args.max_tokens, not args.no_stream))
      batch *= 2
    results, seconds = asyncio.run(
        _load(url, args.clients, args.requests, args.max_tokens, not args.no_stream, args.mixed)
    )
  ttft, latency, tokens = zip(*results)
  print(
      json.dumps(
          {
              "device": jax.devices()[0].device_kind,
              "shape": args.shape,
              "clients": args.clients,
              "requests": args.requests,
              "max_tokens": args.max_tokens,
              "stream": not args.no_stream,
              "continuous": args.continuous,
              "mixed": args.mixed,
              "requests_per_s": round(len(results) / seconds, 2),
              "new_tokens_per_s": round(sum(tokens) / seconds, 1),
              "ttft_p50_s": round(_pct(ttft, 0.5), 3),
              "latency_p50_s": round(_pct(latency, 0.5), 3),
              "latency_p99_s": round(_pct(latency, 0.99), 3),
          }
      ),
      flush=True,
  )


if __name__ == "__main__":
  main()
