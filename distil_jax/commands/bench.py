"""`distil-jax bench --config configs/sft/x.py`: speed of the SFT train step.

Reports tokens/s, model TFLOP/s per device (PaLM convention, 6N + 12*L*d*S per token), MFU
against the device's datasheet bf16 peak, and peak device memory. Synthetic full-length rows,
every token counted. On GPU attention runs through cuDNN. `--mode decode` hands over to the
generation benchmark.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import time

ACCEPTS_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", default="configs/sft/tiny.py", metavar="FILE[:ARG]")
  parser.add_argument("--mode", choices=("train", "decode"), default="train")
  parser.add_argument("--steps", type=int, default=10, help="timed steps")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")


def _peak_memory(compiled) -> tuple[float, str]:
  import jax
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**30, "measured"
  m = compiled.memory_analysis()  # CPU: no allocator statistics; XLA's plan instead
  total = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
  return (total - m.alias_size_in_bytes) / 2**30, "compiled estimate"


def run_train_bench(args) -> dict:
  import jax
  import numpy as np
  from distil_jax.model import AttentionImpl
  from distil_jax.sharding import make_mesh, use_mesh
  from distil_jax.train import metrics as M
  from distil_jax.train.config import from_config_dict, load_config
  from distil_jax.train.losses import SFTLoss
  from distil_jax.train.optim import make_optimizer
  from distil_jax.train.state import abstract_train_state, init_train_state
  from distil_jax.train.step import batch_sharding, jit_train_step

  cfg = from_config_dict(load_config(args.config, args.overrides))
  if jax.default_backend() == "gpu":
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, attention_impl=AttentionImpl.CUDNN))
  B, L = cfg.data.batch_size, cfg.data.seq_len
  mesh = make_mesh(cfg.mesh)
  tx, schedule = make_optimizer(cfg.optim, cfg.steps)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, cfg.model.vocab_size, (B, L + 1), dtype=np.int32)
  host_batch = dict(input_ids=ids[:, :-1], target_ids=ids[:, 1:],
                    loss_mask=np.ones((B, L), np.float32),
                    segment_ids=np.ones((B, L), np.int32),
                    positions=np.tile(np.arange(L, dtype=np.int32), (B, 1)))
  with use_mesh(mesh, cfg.rules):
    graphdef, abstract_state = abstract_train_state(cfg, mesh, tx)
    state = init_train_state(cfg, mesh, tx, abstract_state)
    step_fn = jit_train_step(
        graphdef=graphdef, loss_fn=SFTLoss(chunk=cfg.loss_chunk), tx=tx, schedule=schedule,
        grad_accum=cfg.grad_accum, state_sharding=jax.tree.map(lambda a: a.sharding,
                                                               abstract_state),
        mesh=mesh, rules=cfg.rules)
    batch = jax.device_put(host_batch, batch_sharding(mesh, cfg.rules))
    key = jax.device_put(jax.random.key(0), jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(args.warmup):
      state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(args.steps):
      state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - t0
  flops_per_token = cfg.model.flops_per_token(L)
  perf = M.throughput(B * L * args.steps, seconds, flops_per_token, mesh.devices.size,
                      M.peak_flops_per_device())
  peak_gb, how = _peak_memory(compiled)
  return {
      "config": args.config, "device": jax.devices()[0].device_kind,
      "devices": mesh.devices.size, "mesh": dict(mesh.shape), "batch": B, "seq_len": L,
      "params": cfg.model.num_params(), "matmul_params": cfg.model.num_matmul_params(),
      "param_dtype": str(np.dtype(cfg.model.param_dtype)),
      "compute_dtype": str(np.dtype(cfg.model.compute_dtype)),
      "attention": cfg.model.attention_impl.value, "remat": cfg.model.remat_policy.value,
      "compile_s": round(compile_s, 2), "step_s": seconds / args.steps,
      "tokens_per_s": perf["tokens_per_s"], "tflops_per_device": perf["tflops_per_device"],
      "mfu": perf.get("mfu"), "peak_memory_gb": peak_gb, "peak_memory_source": how,
      "final_loss": float(metrics["loss"]),
  }


def run(args: argparse.Namespace) -> int:
  if args.mode == "decode":
    if importlib.util.find_spec("distil_jax.generate.bench") is None:
      print("distil-jax bench: --mode decode needs distil_jax.generate.bench, not installed")
      return 2
    return int(importlib.import_module("distil_jax.generate.bench").run_decode_bench(args) or 0)
  report = run_train_bench(args)
  print(json.dumps(report, indent=2))
  return 0
