"""The one table between HF Qwen2 tensor names and distil-jax parameters, used both ways.

A rule's `groups` says how our parameter's dimensions merge into the HF matrix (before
the optional transpose): q_kernel [D, N, H] with groups (1, 2) is [D, N*H], transposed
to HF's [N*H, D]. Layer rules name the HF tensor with `{i}`; ours are stacked [L, ...].
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from distil_jax.model.config import ModelConfig


class Rule(NamedTuple):
  hf: str
  ours: str  # "embed", "layers.q_kernel", ...
  groups: tuple[int, ...]
  transpose: bool

  @property
  def per_layer(self) -> bool:
    return self.ours.startswith("layers.")

  def hf_shape(self, our_shape: tuple[int, ...]) -> tuple[int, ...]:
    merged, start = [], 0
    for size in self.groups:
      merged.append(math.prod(our_shape[start : start + size]))
      start += size
    if start != len(our_shape):
      raise ValueError(f"rule {self.hf}: groups {self.groups} do not cover shape {our_shape}")
    return tuple(reversed(merged)) if self.transpose else tuple(merged)

  def to_ours(self, hf_array: np.ndarray, our_shape: tuple[int, ...]) -> np.ndarray:
    a = hf_array.T if self.transpose else hf_array
    return np.ascontiguousarray(a).reshape(our_shape)

  def to_hf(self, our_array: np.ndarray) -> np.ndarray:
    a = our_array.reshape(
        self.hf_shape(our_array.shape)[::-1] if self.transpose else self.hf_shape(our_array.shape)
    )
    return np.ascontiguousarray(a.T if self.transpose else a)


_L = "model.layers.{i}."
TABLE: tuple[Rule, ...] = (
    Rule("model.embed_tokens.weight", "embed", (1, 1), False),
    Rule(_L + "input_layernorm.weight", "layers.attn_norm", (1,), False),
    Rule(_L + "self_attn.q_proj.weight", "layers.q_kernel", (1, 2), True),
    Rule(_L + "self_attn.q_proj.bias", "layers.q_bias", (2,), False),
    Rule(_L + "self_attn.k_proj.weight", "layers.k_kernel", (1, 2), True),
    Rule(_L + "self_attn.k_proj.bias", "layers.k_bias", (2,), False),
    Rule(_L + "self_attn.v_proj.weight", "layers.v_kernel", (1, 2), True),
    Rule(_L + "self_attn.v_proj.bias", "layers.v_bias", (2,), False),
    Rule(_L + "self_attn.o_proj.weight", "layers.o_kernel", (2, 1), True),
    Rule(_L + "post_attention_layernorm.weight", "layers.mlp_norm", (1,), False),
    Rule(_L + "mlp.gate_proj.weight", "layers.gate_kernel", (1, 1), True),
    Rule(_L + "mlp.up_proj.weight", "layers.up_kernel", (1, 1), True),
    Rule(_L + "mlp.down_proj.weight", "layers.down_kernel", (1, 1), True),
    Rule("model.norm.weight", "final_norm", (1,), False),
    Rule("lm_head.weight", "lm_head", (1, 1), True),
)

# Tensors some exporters add that carry no parameters.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class Entry(NamedTuple):
  """One HF tensor: its name, the rule, and the layer index (None for global tensors)."""

  name: str
  rule: Rule
  layer: int | None


def entries(cfg: ModelConfig) -> list[Entry]:
  """Every HF tensor the config implies, in HF's canonical order."""
  out = []
  for rule in TABLE:
    if rule.ours == "lm_head" and cfg.tie_word_embeddings:
      continue
    if rule.per_layer:
      out.extend(Entry(rule.hf.format(i=i), rule, i) for i in range(cfg.num_layers))
    else:
      out.append(Entry(rule.hf, rule, None))
  return sorted(out, key=lambda e: (e.layer is not None, e.layer or 0, TABLE.index(e.rule)))


def our_path(rule: Rule) -> tuple[str, ...]:
  return tuple(rule.ours.split("."))
