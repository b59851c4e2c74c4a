"""YaRN rotary scaling (Qwen2.5's long-context recipe) and the HF config keys the model implements.

YaRN (Peng et al. 2023, https://arxiv.org/abs/2309.00071), as `transformers` computes it: with
d = head_dim, b = rope_theta, s = factor, L = original_max_position_embeddings,

  f_i   = b^(-2i/d)                                   the plain RoPE frequencies, i < d/2
  c(r)  = d * ln(L / (2 pi r)) / (2 ln b)             dimension that turns r times over L
  lo    = max(floor(c(beta_fast)), 0), hi = min(ceil(c(beta_slow)), d - 1)
  ramp_i = clip((i - lo) / (hi - lo), 0, 1)
  inv_freq_i = f_i / s * ramp_i + f_i * (1 - ramp_i)  high frequencies kept, low ones interpolated
  cos, sin  *= attention_factor  (default 0.1 ln s + 1; with mscale and mscale_all_dim,
                                  (0.1 mscale ln s + 1) / (0.1 mscale_all_dim ln s + 1))

Every other setting a Qwen2 config.json can carry that this model does not implement is refused
by `check_supported`, naming the key, instead of loading into a model with different logits.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class YarnScaling:
  factor: float
  original_max_position_embeddings: int
  attention_factor: float
  beta_fast: float = 32.0
  beta_slow: float = 1.0
  truncate: bool = True

  def inv_freq(self, head_dim: int, theta: float) -> np.ndarray:
    """[head_dim // 2] float32 frequencies, computed as transformers does (float32)."""
    d = head_dim
    pos_freqs = np.float32(theta) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d))
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (np.float32(self.factor) * pos_freqs)

    def correction_dim(rotations: float) -> float:
      return (d * math.log(self.original_max_position_embeddings / (rotations * 2 * math.pi))) / (
          2 * math.log(theta)
      )

    lo, hi = correction_dim(self.beta_fast), correction_dim(self.beta_slow)
    if self.truncate:
      lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, d - 1)
    if lo == hi:
      hi += 0.001  # as transformers: avoids a division by zero
    ramp = np.clip(
        (np.arange(d // 2, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo), 0, 1
    )
    keep = (1 - ramp).astype(np.float32)
    return (interpolation * (1 - keep) + extrapolation * keep).astype(np.float32)

  def to_hf(self) -> dict[str, Any]:
    return {
        "rope_type": "yarn",
        "type": "yarn",
        "factor": self.factor,
        "original_max_position_embeddings": self.original_max_position_embeddings,
        "attention_factor": self.attention_factor,
        "beta_fast": self.beta_fast,
        "beta_slow": self.beta_slow,
        "truncate": self.truncate,
    }


_YARN_KEYS = {
    "type",
    "rope_type",
    "rope_theta",
    "factor",
    "original_max_position_embeddings",
    "attention_factor",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
    "truncate",
}


def _mscale(scale: float, mscale: float = 1.0) -> float:
  return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_from_hf(hf: dict[str, Any], source: str) -> tuple[float, YarnScaling | None]:
  """(rope_theta, YaRN or None) from `rope_scaling` (transformers 4) or `rope_parameters` (5)."""
  params = {}
  for key in ("rope_scaling", "rope_parameters"):
    value = hf.get(key)
    if value in (None, {}):
      continue
    if not isinstance(value, dict):
      raise ValueError(f"{source}: {key} must be an object, got {value!r}")
    if any(isinstance(v, dict) for v in value.values()):
      raise ValueError(f"{source}: {key} per layer type is not supported")
    params = {**params, **value}
    where = key
  theta = float(hf.get("rope_theta") or params.get("rope_theta") or 10000.0)
  kind = params.get("rope_type", params.get("type", "default"))
  if kind == "default":
    extra = set(params) - {"type", "rope_type", "rope_theta"}
    if extra:
      raise ValueError(
          f"{source}: {where}.{sorted(extra)[0]} is not supported with the default rope"
      )
    return theta, None
  if kind != "yarn":
    raise ValueError(
        f"{source}: {where}.rope_type {kind!r} is not supported (only 'default' and 'yarn')"
    )
  unknown = set(params) - _YARN_KEYS
  if unknown:
    raise ValueError(f"{source}: {where}.{sorted(unknown)[0]} is not supported for yarn")
  original = int(
      params.get("original_max_position_embeddings")
      or hf.get("original_max_position_embeddings")
      or hf.get("max_position_embeddings", 32768)
  )
  factor = params.get("factor")
  factor = (
      float(factor) if factor is not None else hf.get("max_position_embeddings", 32768) / original
  )
  attention_factor = params.get("attention_factor")
  if attention_factor is None:
    mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
    attention_factor = (
        _mscale(factor, mscale) / _mscale(factor, mscale_all_dim)
        if mscale and mscale_all_dim
        else _mscale(factor)
    )
  return theta, YarnScaling(
      factor=factor,
      original_max_position_embeddings=original,
      attention_factor=float(attention_factor),
      beta_fast=float(params.get("beta_fast") or 32),
      beta_slow=float(params.get("beta_slow") or 1),
      truncate=bool(params.get("truncate", True)),
  )


def check_supported(hf: dict[str, Any], source: str) -> None:
  """Refuses the Qwen2 settings whose logits this model would not reproduce, naming the key."""
  layers = hf.get("num_hidden_layers", 0)
  layer_types = hf.get("layer_types")
  if layer_types is not None:
    sliding = [i for i, t in enumerate(layer_types) if t != "full_attention"]
  elif hf.get("use_sliding_window") and hf.get("sliding_window") is not None:
    sliding = list(range(hf.get("max_window_layers", layers), layers))
  else:
    sliding = []
  if sliding:
    key = (
        "use_sliding_window: true"
        if hf.get("use_sliding_window")
        else f"layer_types[{sliding[0]}] = {layer_types[sliding[0]]!r}"
    )
    raise ValueError(
        f"{source}: {key} (sliding window on layers {sliding[0]}..{sliding[-1]}) is not "
        f"implemented; only full attention"
    )
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"{source}: hidden_act {hf['hidden_act']!r} is not implemented (only 'silu')")
  for key in ("partial_rotary_factor",):
    if hf.get(key) not in (None, 1, 1.0):
      raise ValueError(f"{source}: {key}={hf[key]} is not implemented")
  if hf.get("quantization_config"):
    raise ValueError(f"{source}: quantization_config is not supported (load unquantized weights)")
