"""Throughput of `distil-jax api-logits` against `distil-jax serve` on loopback.

    PYTHONPATH=$PWD python tools/bench_api_logits.py                  # tiny teacher on CPU
    PYTHONPATH=$PWD python tools/bench_api_logits.py --chats 256 --concurrency 16 --top_k 10

Prepares `--chats` synthetic chats, serves a tiny random teacher with Qwen2.5's 151,665 real
tokens in-process, runs `api-logits` once untimed (the server compiles its prompt buckets) and
once more into a fresh store, and prints that run's JSON line (requests/s, bytes per stored
token on disk, payload and JSON response bytes per stored token, what the mapping dropped).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import tempfile
from pathlib import Path


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--chats", type=int, default=64)
  parser.add_argument("--max_length", type=int, default=256)
  parser.add_argument("--top_k", type=int, default=10)
  parser.add_argument("--concurrency", type=int, default=8)
  parser.add_argument("--logprob_dtype", default="float16")
  args = parser.parse_args()

  import jax.numpy as jnp
  import distil_jax
  from distil_jax.cli import main as cli
  from distil_jax.data.prepare import prepare_dataset
  from distil_jax.serve import ServeConfig, start_server
  from distil_jax.testing.hf_models import make_hf_checkpoint
  from distil_jax.tokenizer import load_tokenizer

  root = Path(tempfile.mkdtemp(prefix="bench-api-logits-"))
  rng = random.Random(0)
  words = "the cat sat on a mat while distillation of large models runs fast 123 code".split()
  with open(root / "chats.jsonl", "w") as f:
    for i in range(args.chats):
      f.write(
          json.dumps(
              {
                  "id": f"ex-{i:05d}",
                  "messages": [
                      {
                          "role": "user",
                          "content": " ".join(rng.choices(words, k=rng.randint(5, 40))),
                      },
                      {
                          "role": "assistant",
                          "content": " ".join(rng.choices(words, k=rng.randint(20, 120))),
                      },
                  ],
              }
          )
          + "\n"
      )
  tok = load_tokenizer()
  prepare_dataset([root / "chats.jsonl"], root / "data", tokenizer=tok, max_length=args.max_length)
  teacher = make_hf_checkpoint(
      str(root / "teacher"),
      vocab_size=151_665,
      hidden_size=64,
      intermediate_size=128,
      num_attention_heads=4,
      num_key_value_heads=2,
      max_position_embeddings=args.max_length * 2,
  )
  model = distil_jax.from_pretrained(teacher, dtype=jnp.float32)
  server = start_server(model, tok, port=0, config=ServeConfig(served_model_names=("t",)))
  try:
    summaries = []
    for name in ("warmup", "timed"):
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        rc = cli(
            [
                "api-logits",
                "--endpoint",
                server.url,
                "--model",
                "t",
                "--data",
                str(root / "data"),
                "--output",
                str(root / name),
                "--top_k",
                str(args.top_k),
                "--concurrency",
                str(args.concurrency),
                "--logprob_dtype",
                args.logprob_dtype,
            ]
        )
      if rc:
        return rc
      summaries.append(json.loads(out.getvalue().strip().splitlines()[-1]))
  finally:
    server.stop()
  print(
      json.dumps(
          {
              "chats": args.chats,
              "top_k": args.top_k,
              "concurrency": args.concurrency,
              **summaries[-1],
          }
      )
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
