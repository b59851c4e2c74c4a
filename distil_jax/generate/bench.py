"""Decode speed: new tokens/s of `Generator` at batch 1 and 32, random-init models, bf16.

    python -m distil_jax.generate.bench                       # tiny shape (CPU default)
    python -m distil_jax.generate.bench --shapes 0.5b,1.5b --hf   # GPU, side by side with transformers
    distil-jax bench --mode decode                            # the same, via the bench command

Every row decodes the full budget (no stop ids). Two figures per case: end to end (prefill
included, as transformers' `generate` is usually quoted) and decode only (the prefill of a
one-token run subtracted). Compilation happens in an untimed warm-up.
"""

from __future__ import annotations

import argparse
import json
import time

SHAPES = {
    "tiny": "tiny",
    "0.5b": "qwen2p5_0p5b",
    "1.5b": "qwen2p5_1p5b",
    "3b": "qwen2p5_3b",
    "7b": "qwen2p5_7b",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--shapes",
      default=None,
      help="comma list of "
      + ",".join(SHAPES)
      + " (default: tiny on CPU, 0.5b,1.5b on an accelerator)",
  )
  parser.add_argument("--batches", default="1,32")
  parser.add_argument("--prompt_len", type=int, default=128)
  parser.add_argument("--new_tokens", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
  parser.add_argument("--hf", action="store_true", help="also time transformers generate")


def _model(shape: str):
  import jax
  import jax.numpy as jnp
  from distil_jax.model import ModelConfig, create_model
  from distil_jax.sharding import MeshConfig, make_mesh

  cfg = getattr(ModelConfig, SHAPES[shape])(param_dtype=jnp.bfloat16, compute_dtype=jnp.bfloat16)
  mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
  return create_model(cfg, mesh)


def _best_time(fn, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def bench_ours(model, batch: int, prompt_len: int, new_tokens: int, repeats: int) -> dict:
  import numpy as np
  from distil_jax.generate import Generator

  gen = Generator(model, stop_ids=())
  vocab = min(1000, model.cfg.vocab_size)
  prompts = np.random.RandomState(0).randint(0, vocab, (batch, prompt_len)).tolist()
  run = lambda n: gen.generate(prompts, max_new_tokens=n)
  for n in (1, new_tokens):  # compile both
    assert all(len(c.tokens) == n for c in run(n))
  full = _best_time(lambda: run(new_tokens), repeats)
  prefill = _best_time(lambda: run(1), repeats)
  return {
      "end_to_end_tok_s": batch * new_tokens / full,
      "decode_tok_s": batch * (new_tokens - 1) / max(full - prefill, 1e-9),
      "prefill_s": prefill,
      "total_s": full,
  }


def bench_hf(model_cfg, batch: int, prompt_len: int, new_tokens: int, repeats: int) -> dict:
  import torch
  from transformers import Qwen2Config, Qwen2ForCausalLM

  device = "cuda" if torch.cuda.is_available() else "cpu"
  dtype = torch.bfloat16 if device == "cuda" else torch.float32
  hf = Qwen2ForCausalLM(Qwen2Config(**model_cfg.to_hf())).to(device=device, dtype=dtype).eval()
  ids = torch.randint(0, min(1000, model_cfg.vocab_size), (batch, prompt_len), device=device)
  kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0, eos_token_id=None)

  def run(n):
    with torch.no_grad():
      hf.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
    if device == "cuda":
      torch.cuda.synchronize()

  run(2)
  full = _best_time(lambda: run(new_tokens), repeats)
  prefill = _best_time(lambda: run(1), repeats)
  return {
      "end_to_end_tok_s": batch * new_tokens / full,
      "decode_tok_s": batch * (new_tokens - 1) / max(full - prefill, 1e-9),
      "device": device,
  }


def run_decode_bench(args) -> int:
  import jax

  on_cpu = jax.default_backend() == "cpu"
  shapes = (getattr(args, "shapes", None) or ("tiny" if on_cpu else "0.5b,1.5b")).split(",")
  batches = [int(b) for b in str(getattr(args, "batches", "1,32")).split(",")]
  prompt_len = getattr(args, "prompt_len", 128)
  new_tokens = getattr(args, "new_tokens", 256)
  repeats = getattr(args, "repeats", 3)
  with_hf = getattr(args, "hf", False)
  print(
      f"decode bench on {jax.devices()[0].device_kind}: prompt {prompt_len}, "
      f"{new_tokens} new tokens, greedy, bf16"
  )
  results = []
  for shape in shapes:
    model = _model(shape)
    for batch in batches:
      row = {
          "shape": shape,
          "batch": batch,
          "ours": bench_ours(model, batch, prompt_len, new_tokens, repeats),
      }
      if with_hf:
        row["transformers"] = bench_hf(model.cfg, batch, prompt_len, new_tokens, repeats)
      results.append(row)
      line = (
          f"{shape:>5} batch {batch:>3}: distil-jax {row['ours']['end_to_end_tok_s']:10.1f}"
          f" new tok/s end to end, {row['ours']['decode_tok_s']:10.1f} decode only"
      )
      if with_hf:
        line += (
            f" | transformers {row['transformers']['end_to_end_tok_s']:8.1f} end to end,"
            f" {row['transformers']['decode_tok_s']:8.1f} decode only"
        )
      print(line, flush=True)
    del model
  print(json.dumps(results))
  return 0


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_arguments(parser)
  return run_decode_bench(parser.parse_args())


if __name__ == "__main__":
  raise SystemExit(main())
