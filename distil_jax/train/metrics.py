"""Metrics out of the step: read one step late, written to JSONL and TensorBoard.

Throughput is model FLOPs in the PaLM convention (`ModelConfig.flops_per_token`:
6N + 12*L*d*S, N counting every matmul weight including the LM head).
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np

# Dense bf16 peak FLOP/s per device, from the vendors' datasheets. Unknown kinds (CPU) -> None.
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989.4e12,
    "NVIDIA H100": 989.4e12,
    "NVIDIA H200": 989.4e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def peak_flops_per_device(device: jax.Device | None = None) -> float | None:
  kind = (device or jax.devices()[0]).device_kind
  for name, flops in PEAK_FLOPS.items():
    if kind.startswith(name):
      return flops
  return None


def throughput(
    tokens: float, seconds: float, flops_per_token: float, num_devices: int, peak: float | None
) -> dict[str, float]:
  tokens_per_s = tokens / max(seconds, 1e-9)
  tflops_per_device = tokens_per_s * flops_per_token / num_devices / 1e12
  out = {"tokens_per_s": tokens_per_s, "tflops_per_device": tflops_per_device}
  if peak:
    out["mfu"] = tflops_per_device * 1e12 / peak
  return out


class NonFiniteError(RuntimeError):
  pass


def check_finite(step: int, metrics: dict[str, float]) -> None:
  for name in ("loss", "grad_norm"):
    if name in metrics and not math.isfinite(metrics[name]):
      raise NonFiniteError(f"step {step}: {name} is {metrics[name]}; stopping without saving")


class MetricsWriter:
  """`metrics.jsonl` and TensorBoard events in the workdir (process 0 writes)."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self._jsonl = self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def rewind(self, step: int) -> None:
    """Forget lines past `step`, the checkpoint a run resumes from: a run killed after its
    last save logged steps it will now train again, and they must not appear twice."""
    if not self.enabled:
      return
    path = self._jsonl.name
    self._jsonl.close()
    with open(path) as f:
      kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, path)
    self._jsonl = open(path, "a")

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
    self._jsonl.flush()
    for k, v in metrics.items():
      self._tb.add_scalar(f"train/{k}", v, step)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


class StepTimer:
  """Host-side wall clock between metric reads (the device runs ahead of the host)."""

  def __init__(self):
    self.last = time.perf_counter()

  def lap(self) -> float:
    now = time.perf_counter()
    dt, self.last = now - self.last, now
    return dt


def to_host(metrics) -> dict[str, float]:
  return {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}
