"""Throughput of the DPO train step on random pairs (precomputed reference log-probs), as
`distil-jax bench` measures SFT:

    python -m distil_jax.train.dpo_bench --config configs/dpo/distilqwen2p5.py   # 1.5B, 2 x 1,024
    python -m distil_jax.train.dpo_bench --config configs/dpo/tiny.py --config.data.seq_len=128

Prints JSON: tokens/s (both rows of every pair: 2 * batch * seq_len a step), TFLOP/s per device
by the model's 6N + attention count (the extra rematerialised LM-head forward of the sequence
log-probs is not counted: it is overhead, not useful work), and the fraction of the measured
bf16 matmul ceiling of the device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time


def run_dpo_bench(config: str, overrides: list[str], *, steps: int, warmup: int) -> dict:
  import jax
  import numpy as np

  from distil_jax.commands.bench import measure_matmul_ceiling
  from distil_jax.model import AttentionImpl
  from distil_jax.sharding import make_mesh, use_mesh
  from distil_jax.train import metrics as M
  from distil_jax.train.config import from_config_dict, load_config
  from distil_jax.train.optim import make_optimizer
  from distil_jax.train.state import abstract_train_state, init_train_state
  from distil_jax.train.step import field_shardings, jit_train_step

  overrides = list(overrides) + ["--config.loss.reference_logprobs=<random>"]
  cfg = from_config_dict(load_config(config, overrides))
  if jax.default_backend() == "gpu":
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, attention_impl=AttentionImpl.CUDNN)
    )
  B, L = cfg.data.batch_size, cfg.data.seq_len
  mesh = make_mesh(cfg.mesh)
  tx, schedule = make_optimizer(cfg.optim, cfg.steps)
  loss = cfg.loss.build(cfg)
  rng = np.random.default_rng(0)
  host = {}
  for side in ("chosen", "rejected"):
    ids = rng.integers(0, cfg.model.vocab_size, (B, L + 1), dtype=np.int32)
    mask = np.zeros((B, L), np.float32)
    mask[:, L // 4 :] = 1.0  # a quarter prompt, three quarters response
    host.update(
        {
            f"{side}_input_ids": ids[:, :-1],
            f"{side}_target_ids": ids[:, 1:],
            f"{side}_loss_mask": mask,
            f"{side}_segment_ids": np.ones((B, L), np.int32),
            f"{side}_positions": np.tile(np.arange(L, dtype=np.int32), (B, 1)),
            f"ref_{side}_logp": rng.normal(-L, 10.0, (B,)).astype(np.float32),
        }
    )
  with use_mesh(mesh, cfg.rules):
    graphdef, _, abstract_state = abstract_train_state(cfg, mesh, tx)
    state = init_train_state(cfg, mesh, tx, abstract_state)
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
    batch = jax.device_put(
        {k: host[k] for k in loss.fields()}, field_shardings(loss.fields(), mesh, cfg.rules)
    )
    key = jax.device_put(
        jax.random.key(0), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    )
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch, key, {}).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
      state, metrics = compiled(state, batch, key, {})
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, batch, key, {})
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - t0
  perf = M.throughput(
      2 * B * L * steps,
      seconds,
      cfg.model.flops_per_token(L),
      mesh.devices.size,
      M.peak_flops_per_device(),
  )
  ceiling = measure_matmul_ceiling()
  return {
      "config": config,
      "device": jax.devices()[0].device_kind,
      "devices": mesh.devices.size,
      "pairs_per_step": B,
      "seq_len": L,
      "params": cfg.model.num_params(),
      "compute_dtype": str(np.dtype(cfg.model.compute_dtype)),
      "variant": cfg.loss.variant,
      "compile_s": round(compile_s, 2),
      "step_s": seconds / steps,
      "tokens_per_s": perf["tokens_per_s"],
      "tflops_per_device": perf["tflops_per_device"],
      **ceiling,
      "of_ceiling": perf["tflops_per_device"] / ceiling["ceiling_tflops"],
      "final_loss": float(metrics["loss"]),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/dpo/tiny.py")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=1)
  args, overrides = parser.parse_known_args(argv)
  print(
      json.dumps(
          run_dpo_bench(args.config, overrides, steps=args.steps, warmup=args.warmup), indent=2
      )
  )
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
