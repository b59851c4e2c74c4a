"""`distil-jax bench --config configs/sft/x.py`: speed of the SFT train step (a KD config:
`distil_jax/train/kd_bench.py`, the distillation step against its parts).

Reports tokens/s, model TFLOP/s per device (PaLM convention, 6N + 12*L*d*S per token), MFU
against the device's datasheet bf16 peak, `of_ceiling` against a bf16 matmul ceiling measured in
the same run (the basis of the issue's targets), and peak device memory. Synthetic full-length rows,
every token counted. On GPU attention runs through cuDNN. `--mode decode` hands over to the
generation benchmark.

`--hf` times transformers' train step on the same shape too (`distil_jax/train/hf_bench.py`:
random-init `Qwen2ForCausalLM`, sdpa, AdamW, the same FLOPs per token and peak) and prints
`{"distil_jax": ..., "transformers": ..., "speedup": ...}`, speedup being our per-device
throughput over transformers' on one device. The transformers half runs first, in a process of
its own that has exited before JAX starts: JAX's allocator keeps the share of the card it reserves
(0.92 under launch/single_gpu.sh) until its process ends, deleted arrays or not, so torch can
precede it but not follow it.
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
  parser.add_argument(
      "--unpacked",
      action="store_true",
      help="rows with no segment ids (one document each): plain causal attention, "
      "as transformers runs; default: segment ids, as packed SFT data has",
  )
  parser.add_argument(
      "--hf",
      action="store_true",
      help="also time transformers on the same shape (train: its train step; " "decode: generate)",
  )
  parser.add_argument(
      "--hf_precision",
      choices=("auto", "bf16", "autocast", "fp32"),
      default="auto",
      help="auto: bf16 params if ours are, autocast if we " "compute in bf16, else fp32",
  )
  parser.add_argument("--hf_compile", action="store_true", help="torch.compile the HF model")
  parser.add_argument(
      "--hf_grad_ckpt", action="store_true", help="gradient checkpointing in the HF model"
  )
  parser.add_argument(
      "--teacher_preset",
      default="qwen2p5_7b",
      help="KD configs: the teacher's shape (a ModelConfig size), random init",
  )


def _peak_memory(compiled) -> tuple[float, str]:
  import jax

  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**30, "measured"
  m = compiled.memory_analysis()  # CPU: no allocator statistics; XLA's plan instead
  total = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
  return (total - m.alias_size_in_bytes) / 2**30, "compiled estimate"


def measure_matmul_ceiling(reps: int = 10) -> dict:
  """The device's bf16 matmul throughput, measured: the ceiling the issue's targets are a
  fraction of (ANCHORS.md: 8192^3 on an H100 gives 792-804 TFLOP/s, below the 989 datasheet
  figure that `mfu` divides by). 1024^3 on a CPU, where 8192^3 would take minutes."""
  import jax
  import jax.numpy as jnp

  n = 1024 if jax.default_backend() == "cpu" else 8192
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
  matmul = jax.jit(lambda a, b: a @ b)
  for _ in range(3):
    out = matmul(a, b)
  out.block_until_ready()
  t0 = time.perf_counter()
  for _ in range(reps):
    out = matmul(a, b)
  out.block_until_ready()
  seconds = time.perf_counter() - t0
  return {"ceiling_tflops": 2 * n**3 * reps / seconds / 1e12, "ceiling_matmul": f"bf16 {n}^3"}


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
  from distil_jax.train.step import field_shardings, jit_train_step

  cfg = from_config_dict(load_config(args.config, args.overrides))
  if jax.default_backend() == "gpu":
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, attention_impl=AttentionImpl.CUDNN)
    )
  B, L = cfg.data.batch_size, cfg.data.seq_len
  mesh = make_mesh(cfg.mesh)
  tx, schedule = make_optimizer(cfg.optim, cfg.steps)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, cfg.model.vocab_size, (B, L + 1), dtype=np.int32)
  host_batch = dict(
      input_ids=ids[:, :-1],
      target_ids=ids[:, 1:],
      loss_mask=np.ones((B, L), np.float32),
      segment_ids=np.ones((B, L), np.int32),
      positions=np.tile(np.arange(L, dtype=np.int32), (B, 1)),
  )
  if args.unpacked:
    del host_batch["segment_ids"]
  with use_mesh(mesh, cfg.rules):
    graphdef, _, abstract_state = abstract_train_state(cfg, mesh, tx)
    state = init_train_state(cfg, mesh, tx, abstract_state)
    loss = SFTLoss(
        chunk=cfg.loss_chunk, logits_dtype=cfg.loss_logits_dtype, packed=not args.unpacked
    )
    step_fn = jit_train_step(
        graphdef=graphdef,
        loss=loss,
        tx=tx,
        schedule=schedule,
        grad_accum=cfg.grad_accum,
        state_sharding=jax.tree.map(lambda a: a.sharding, abstract_state),
        mesh=mesh,
        rules=cfg.rules,
    )
    batch = jax.device_put(host_batch, field_shardings(loss.fields(), mesh, cfg.rules))
    key = jax.device_put(
        jax.random.key(0), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    )
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch, key, {}).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(args.warmup):
      state, metrics = compiled(state, batch, key, {})
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(args.steps):
      state, metrics = compiled(state, batch, key, {})
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - t0
  flops_per_token = cfg.model.flops_per_token(L)
  perf = M.throughput(
      B * L * args.steps, seconds, flops_per_token, mesh.devices.size, M.peak_flops_per_device()
  )
  peak_gb, how = _peak_memory(compiled)
  return {
      "config": args.config,
      "device": jax.devices()[0].device_kind,
      "devices": mesh.devices.size,
      "mesh": dict(mesh.shape),
      "batch": B,
      "seq_len": L,
      "params": cfg.model.num_params(),
      "matmul_params": cfg.model.num_matmul_params(),
      "param_dtype": str(np.dtype(cfg.model.param_dtype)),
      "compute_dtype": str(np.dtype(cfg.model.compute_dtype)),
      "attention": cfg.model.attention_impl.value,
      "remat": cfg.model.remat_policy.value,
      "loss_chunk": cfg.loss_chunk,
      "loss_logits_dtype": str(np.dtype(cfg.loss_logits_dtype)),
      "packed": not args.unpacked,
      "max_segments_per_row": cfg.model.max_segments_per_row,
      "compile_s": round(compile_s, 2),
      "step_s": seconds / args.steps,
      "tokens_per_s": perf["tokens_per_s"],
      "tflops_per_device": perf["tflops_per_device"],
      "mfu": perf.get("mfu"),
      "peak_memory_gb": peak_gb,
      "peak_memory_source": how,
      "final_loss": float(metrics["loss"]),
      **_of_ceiling(perf["tflops_per_device"]),
  }


def _of_ceiling(tflops_per_device: float, ceiling: dict | None = None) -> dict:
  ceiling = ceiling or measure_matmul_ceiling()
  return {**ceiling, "of_ceiling": tflops_per_device / ceiling["ceiling_tflops"]}


def run_hf_bench(args, cfg) -> dict:
  """Transformers' step on the shape and optimizer settings of `cfg`, in a subprocess."""
  from distil_jax.model.config import dtype_name
  from distil_jax.train.hf_bench import HFBenchSpec, Precision, run_in_subprocess

  precision = (
      Precision.matching(dtype_name(cfg.model.param_dtype), dtype_name(cfg.model.compute_dtype))
      if args.hf_precision == "auto"
      else Precision(args.hf_precision)
  )
  o = cfg.optim
  return run_in_subprocess(
      HFBenchSpec(
          hf_config=cfg.model.to_hf(),
          batch=cfg.data.batch_size,
          seq_len=cfg.data.seq_len,
          steps=args.steps,
          warmup=args.warmup,
          precision=precision,
          compile=args.hf_compile,
          grad_ckpt=args.hf_grad_ckpt,
          lr=o.lr,
          b1=o.b1,
          b2=o.b2,
          eps=o.eps,
          weight_decay=o.weight_decay,
          clip_norm=o.clip_norm,
          seed=cfg.seed,
      )
  )


def _side_by_side(ours: dict, theirs: dict, flops_per_token: float) -> dict:
  """Speedup per device: transformers' step runs on one."""
  speedup = (
      ours["tokens_per_s"] / ours["devices"] / theirs["tokens_per_s"]
      if "tokens_per_s" in theirs
      else None
  )  # None: it ran out of memory or failed
  if "tflops_per_device" in theirs:  # the same measured ceiling for both
    theirs = {
        **theirs,
        **_of_ceiling(
            theirs["tflops_per_device"], {k: ours[k] for k in ("ceiling_tflops", "ceiling_matmul")}
        ),
    }
  return {
      "distil_jax": {**ours, "flops_per_token": flops_per_token},
      "transformers": theirs,
      "speedup": speedup,
  }


def run(args: argparse.Namespace) -> int:
  if args.mode == "decode":
    if importlib.util.find_spec("distil_jax.generate.bench") is None:
      print("distil-jax bench: --mode decode needs distil_jax.generate.bench, not installed")
      return 2
    return int(importlib.import_module("distil_jax.generate.bench").run_decode_bench(args) or 0)
  from distil_jax.train.config import from_config_dict, load_config

  cfg = from_config_dict(load_config(args.config, args.overrides))
  if cfg.loss.kind == "kd":
    from distil_jax.train.kd_bench import run_kd_bench

    print(json.dumps(run_kd_bench(args, cfg), indent=2))
    return 0
  if not args.hf:
    print(json.dumps(run_train_bench(args), indent=2))
    return 0
  theirs = run_hf_bench(args, cfg)  # first: see the module docstring
  ours = run_train_bench(args)
  print(
      json.dumps(_side_by_side(ours, theirs, cfg.model.flops_per_token(cfg.data.seq_len)), indent=2)
  )
  return 0
