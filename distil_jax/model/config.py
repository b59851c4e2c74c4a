"""Qwen2 architecture hyper-parameters: named sizes, and the bridge to HF `config.json`."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import jax.numpy as jnp

from distil_jax.model.rope_scaling import YarnScaling, check_supported, rope_from_hf


class AttentionImpl(enum.Enum):
  XLA = "xla"  # portable einsum path; the CPU path and the decode path
  CUDNN = "cudnn"  # cuDNN flash attention via jax.nn.dot_product_attention (GPU)
  SPLASH = "splash"  # Pallas splash attention (TPU; interpret mode elsewhere, for tests)


class RematPolicy(enum.Enum):
  NONE = "none"  # keep every activation (fastest, most memory)
  FULL = "full"  # recompute the whole layer in the backward pass
  DOTS = "dots"  # save matmul outputs, recompute the cheap element-wise work
  DOTS_NO_BATCH = "dots_no_batch"  # save only weight matmuls (no attention scores)


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def parse_dtype(name: str | Any) -> Any:
  """'bfloat16' -> jnp.bfloat16; dtypes pass through. Unknown names are an error."""
  if not isinstance(name, str):
    return jnp.dtype(name).type
  try:
    return _DTYPES[name]
  except KeyError:
    raise ValueError(f"unknown dtype {name!r}; choose from {sorted(_DTYPES)}") from None


def dtype_name(dtype: Any) -> str:
  return jnp.dtype(dtype).name


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 1_000_000.0
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = False
  max_position_embeddings: int = 32768
  param_dtype: Any = jnp.float32
  compute_dtype: Any = jnp.bfloat16
  attention_impl: AttentionImpl = AttentionImpl.XLA
  # cuDNN only. 0: packed documents are kept apart by a dense [B,1,T,T] bias (slow, any count).
  # N > 0: cuDNN's ragged (THD) layout with at most N documents per row, no T*T tensor at all;
  # Hopper or later. Rows holding more documents attend across the later ones' boundaries, so
  # the data pipeline must cap documents per row at N (see attention.packed_layout).
  max_segments_per_row: int = 0
  remat_policy: RematPolicy = RematPolicy.NONE
  initializer_range: float = 0.02
  rope_scaling: YarnScaling | None = None  # None: plain RoPE (see rope_scaling.py for YaRN)

  def __post_init__(self):
    if self.max_segments_per_row < 0:
      raise ValueError(f"max_segments_per_row={self.max_segments_per_row} must be >= 0")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} is not a multiple of " f"num_kv_heads={self.num_kv_heads}"
      )

  # --- Qwen2.5 sizes (public config.json values) ---------------------------------
  # The embedding rows the published config.json files declare: 0.5B-3B pad the tokenizer's
  # 151,665 real tokens to 151,936 rows, 7B-72B to 152,064.
  @classmethod
  def _qwen(cls, d, f, layers, heads, kv, tie, vocab=151936, **kw):
    kw.setdefault("vocab_size", vocab)
    return cls(
        hidden_size=d,
        intermediate_size=f,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=d // heads,
        tie_word_embeddings=tie,
        **kw,
    )

  @classmethod
  def qwen2p5_0p5b(cls, **kw):
    return cls._qwen(896, 4864, 24, 14, 2, True, **kw)

  @classmethod
  def qwen2p5_1p5b(cls, **kw):
    return cls._qwen(1536, 8960, 28, 12, 2, True, **kw)

  @classmethod
  def qwen2p5_3b(cls, **kw):
    return cls._qwen(2048, 11008, 36, 16, 2, True, **kw)

  @classmethod
  def qwen2p5_7b(cls, **kw):
    return cls._qwen(3584, 18944, 28, 28, 4, False, vocab=152064, **kw)

  @classmethod
  def qwen2p5_14b(cls, **kw):
    return cls._qwen(5120, 13824, 48, 40, 8, False, vocab=152064, **kw)

  @classmethod
  def qwen2p5_32b(cls, **kw):
    return cls._qwen(5120, 27648, 64, 40, 8, False, vocab=152064, **kw)

  @classmethod
  def qwen2p5_72b(cls, **kw):
    return cls._qwen(8192, 29568, 80, 64, 8, False, vocab=152064, **kw)

  @classmethod
  def tiny(cls, **kw):
    """Two layers, GQA 2:1, a small vocabulary: for tests and CPU debugging."""
    base = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        rope_theta=10000.0,
        max_position_embeddings=2048,
        compute_dtype=jnp.float32,
    )
    base.update(kw)
    return cls(**base)

  @classmethod
  def tiny_teacher(cls, **kw):
    """A teacher for `tiny` students on CPU: twice as deep, wider, and 128 more vocabulary rows
    (as Qwen2.5 7B has over 1.5B), so alignment and fusion are exercised."""
    base = dict(
        vocab_size=152064,
        hidden_size=128,
        intermediate_size=256,
        num_layers=4,
        num_heads=8,
        num_kv_heads=2,
        head_dim=16,
        rope_theta=10000.0,
        max_position_embeddings=2048,
        compute_dtype=jnp.float32,
    )
    base.update(kw)
    return cls(**base)

  @classmethod
  def by_name(cls, name: str, **kw) -> "ModelConfig":
    ctor = getattr(cls, name, None)
    if name.startswith("_") or not callable(ctor) or name in ("by_name", "from_hf"):
      raise ValueError(f"unknown model size {name!r}; choose from {', '.join(MODEL_SIZES)}")
    return ctor(**kw)

  # --- counts for FLOPs / MFU ---------------------------------------------------
  def num_params(self) -> int:
    d, f, n, k, h = (
        self.hidden_size,
        self.intermediate_size,
        self.num_heads,
        self.num_kv_heads,
        self.head_dim,
    )
    attn = d * n * h + 2 * d * k * h + n * h + 2 * k * h + n * h * d
    per_layer = attn + 3 * d * f + 2 * d
    head = 0 if self.tie_word_embeddings else d * self.vocab_size
    return self.vocab_size * d + self.num_layers * per_layer + d + head

  def num_matmul_params(self) -> int:
    """Weights that take part in a matmul per token, the LM head included (PaLM convention)."""
    d, f, n, k, h = (
        self.hidden_size,
        self.intermediate_size,
        self.num_heads,
        self.num_kv_heads,
        self.head_dim,
    )
    per_layer = d * n * h + 2 * d * k * h + n * h * d + 3 * d * f
    return self.num_layers * per_layer + d * self.vocab_size

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token: 6N + 12*L*d_attn*S (causal attention counted in full)."""
    return (
        6.0 * self.num_matmul_params()
        + 12.0 * self.num_layers * (self.num_heads * self.head_dim) * seq_len
    )

  # --- HF config.json -----------------------------------------------------------
  @classmethod
  def from_hf(cls, hf: dict[str, Any], *, source: str = "config.json", **kw) -> "ModelConfig":
    if hf.get("model_type") != "qwen2":
      raise ValueError(f"{source}: model_type is {hf.get('model_type')!r}, expected 'qwen2'")
    check_supported(hf, source)
    theta, rope_scaling = rope_from_hf(hf, source)
    heads = hf["num_attention_heads"]
    hf_dtype = hf.get("torch_dtype") or hf.get("dtype")
    defaults = {}
    if hf_dtype in _DTYPES:
      defaults["param_dtype"] = _DTYPES[hf_dtype]
    defaults.update(kw)
    return cls(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads", heads),
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rope_theta=float(theta),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
        initializer_range=hf.get("initializer_range", 0.02),
        rope_scaling=rope_scaling,
        **defaults,
    )

  def to_hf(
      self, *, bos_token_id: int | None = 151643, eos_token_id: int | None = 151645
  ) -> dict[str, Any]:
    if self.head_dim * self.num_heads != self.hidden_size:
      raise ValueError("HF Qwen2 requires head_dim * num_heads == hidden_size")
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": self.max_position_embeddings,
        "rms_norm_eps": self.rms_norm_eps,
        "rope_theta": self.rope_theta,
        "tie_word_embeddings": self.tie_word_embeddings,
        "attention_dropout": 0.0,
        "initializer_range": self.initializer_range,
        "use_cache": True,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": self.num_layers,
        "rope_scaling": self.rope_scaling.to_hf() if self.rope_scaling else None,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "torch_dtype": dtype_name(self.param_dtype),
    }


MODEL_SIZES = (
    "tiny",
    "tiny_teacher",
    "qwen2p5_0p5b",
    "qwen2p5_1p5b",
    "qwen2p5_3b",
    "qwen2p5_7b",
    "qwen2p5_14b",
    "qwen2p5_32b",
    "qwen2p5_72b",
)
