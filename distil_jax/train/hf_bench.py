"""Transformers' SFT train step timed on the shape of a distil-jax config: the bar `bench --hf` sets.

    distil-jax bench --config configs/sft/qwen2p5_0p5b.py --hf     # both halves, one JSON object
    python -m distil_jax.train.hf_bench --json-args '{"hf_config": {...}, "batch": 8, ...}'

As ANCHORS.md measured it: `Qwen2ForCausalLM` at random init, sdpa attention, AdamW (fused on
CUDA), synthetic full-length rows, `model(input_ids, labels=input_ids).loss`, global-norm clipping
when the config clips. Precision is one of
  bf16      parameters and optimizer state in bfloat16,
  autocast  float32 parameters, forward under `torch.autocast(bfloat16)`,
  fp32      float32 throughout (the tiny CPU config computes in float32 on our side too).
Model FLOPs are counted from the torch modules (every `nn.Linear` weight, LM head included, plus
12*layers*d_attn*S), the PaLM convention of `ModelConfig.flops_per_token`, so a disagreement between
the two counts shows. `bench --hf` runs this in its own process (`run_in_subprocess`): torch gets a
CUDA allocator of its own, and an OOM or a crash cannot take the JAX half down with it. A CUDA OOM
is reported as `{"oom": true}`. torch is imported only inside the functions here.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import subprocess
import sys
import time


class Precision(enum.Enum):
  BF16 = "bf16"
  AUTOCAST = "autocast"
  FP32 = "fp32"

  @classmethod
  def matching(cls, param_dtype: str, compute_dtype: str) -> "Precision":
    """The torch set-up closest to ours: bf16 parameters stay bf16; float32 parameters computing
    in bf16 are autocast; float32 throughout stays float32."""
    if param_dtype == "bfloat16":
      return cls.BF16
    return cls.AUTOCAST if compute_dtype == "bfloat16" else cls.FP32


@dataclasses.dataclass(frozen=True, kw_only=True)
class HFBenchSpec:
  hf_config: dict  # `ModelConfig.to_hf()`
  batch: int
  seq_len: int
  steps: int = 10
  warmup: int = 2  # untimed steps, the first included (torch.compile compiles there)
  precision: Precision = Precision.BF16
  compile: bool = False
  grad_ckpt: bool = False
  lr: float = 3e-4
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.0
  clip_norm: float = 1.0  # 0 disables
  seed: int = 0

  def to_json(self) -> str:
    return json.dumps({**dataclasses.asdict(self), "precision": self.precision.value})

  @classmethod
  def from_json(cls, text: str) -> "HFBenchSpec":
    d = json.loads(text)
    return cls(**{**d, "precision": Precision(d["precision"])})


def _peak_flops(device_name: str) -> float | None:
  """The datasheet peak our bench uses, looked up by torch's name for the card (the same
  strings as JAX's `device_kind`)."""
  from distil_jax.train.metrics import PEAK_FLOPS

  return next((f for name, f in PEAK_FLOPS.items() if device_name.startswith(name)), None)


def _flops_per_token(model, seq_len: int) -> tuple[int, float]:
  import torch

  matmul_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
  c = model.config
  attn = (
      12.0
      * c.num_hidden_layers
      * c.num_attention_heads
      * (getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
      * seq_len
  )
  return matmul_params, 6.0 * matmul_params + attn


def _peak_memory_gb(device) -> tuple[float, str]:
  import torch

  if device.type == "cuda":
    return torch.cuda.max_memory_allocated(device) / 2**30, "torch.cuda.max_memory_allocated"
  import resource  # CPU: no allocator statistics; the process high-water mark instead

  return (
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30,
      "process peak RSS (torch, model, optimizer and activations)",
  )


def _timed_steps(spec: HFBenchSpec, device) -> dict:
  import torch
  from transformers import Qwen2Config, Qwen2ForCausalLM

  torch.manual_seed(spec.seed)
  config = Qwen2Config(**{**spec.hf_config, "use_cache": False})
  dtype = torch.bfloat16 if spec.precision is Precision.BF16 else torch.float32
  with torch.device(device):
    model = Qwen2ForCausalLM._from_config(config, attn_implementation="sdpa", dtype=dtype)
  model.train()
  if spec.grad_ckpt:
    model.gradient_checkpointing_enable()
  params = sum(p.numel() for p in model.parameters())
  matmul_params, flops_per_token = _flops_per_token(model, spec.seq_len)
  opt = torch.optim.AdamW(
      model.parameters(),
      lr=spec.lr,
      betas=(spec.b1, spec.b2),
      eps=spec.eps,
      weight_decay=spec.weight_decay,
      **({"fused": True} if device.type == "cuda" else {}),
  )
  forward = torch.compile(model) if spec.compile else model
  ids = torch.randint(
      0,
      config.vocab_size,
      (spec.batch, spec.seq_len),
      generator=torch.Generator().manual_seed(spec.seed),
  ).to(device)
  autocast = torch.autocast(
      device.type, dtype=torch.bfloat16, enabled=spec.precision is Precision.AUTOCAST
  )

  def step():
    with autocast:
      loss = forward(input_ids=ids, labels=ids).loss
    loss.backward()
    if spec.clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()

  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  t0 = time.perf_counter()
  first_loss = step()
  sync()
  first_step_s = time.perf_counter() - t0
  for _ in range(spec.warmup - 1):
    step()
  sync()
  t0 = time.perf_counter()
  for _ in range(spec.steps):
    loss = step()
  sync()
  seconds = time.perf_counter() - t0
  return {
      "params": params,
      "matmul_params": matmul_params,
      "flops_per_token": flops_per_token,
      "first_step_s": round(first_step_s, 2),
      "step_s": seconds / spec.steps,
      "seconds": seconds,
      "first_loss": float(first_loss),
      "final_loss": float(loss),
  }


def bench_hf_train_step(spec: HFBenchSpec) -> dict:
  """Time `spec.steps` transformers train steps after `spec.warmup` untimed ones."""
  import torch
  import transformers
  from distil_jax.train.metrics import throughput

  if spec.steps < 1 or spec.warmup < 1:
    raise ValueError(f"steps={spec.steps}, warmup={spec.warmup}: both must be at least 1")
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
  report = {
      "device": name,
      "devices": 1,
      "batch": spec.batch,
      "seq_len": spec.seq_len,
      "precision": spec.precision.value,
      "attention": "sdpa",
      "compile": spec.compile,
      "grad_ckpt": spec.grad_ckpt,
      "torch": torch.__version__,
      "transformers": transformers.__version__,
  }
  if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
  try:
    timed = _timed_steps(spec, device)
  except Exception as e:  # torch.compile can wrap the OOM in its own error type
    if not (isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e)):
      raise
    return {**report, "oom": True, "error": str(e).strip().splitlines()[0]}
  perf = throughput(
      spec.batch * spec.seq_len * spec.steps,
      timed.pop("seconds"),
      timed["flops_per_token"],
      1,
      _peak_flops(name),
  )
  peak_gb, how = _peak_memory_gb(device)
  return {
      **report,
      **timed,
      "tokens_per_s": perf["tokens_per_s"],
      "tflops_per_device": perf["tflops_per_device"],
      "mfu": perf.get("mfu"),
      "peak_memory_gb": peak_gb,
      "peak_memory_source": how,
  }


def run_in_subprocess(spec: HFBenchSpec, *, timeout_s: float | None = None) -> dict:
  """`bench_hf_train_step` in a fresh Python: its own CUDA allocator, and a crash (host OOM,
  a segfault) is a report with the exit status instead of the end of the caller."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")  # the child's JAX (metrics) must not claim the GPU
  cmd = [sys.executable, "-m", "distil_jax.train.hf_bench", "--json-args", spec.to_json()]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout_s} s"}
  lines = proc.stdout.strip().splitlines()
  if proc.returncode != 0 or not lines:
    return {"error": f"exit status {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}
  return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json-args", required=True, help="an HFBenchSpec as JSON")
  args = parser.parse_args(argv)
  print(json.dumps(bench_hf_train_step(HFBenchSpec.from_json(args.json_args))), flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
