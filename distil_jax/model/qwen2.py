"""The Qwen2 decoder in Flax NNX: stacked layer parameters run under `jax.lax.scan`.

Every parameter carries `axes` metadata naming its logical axes; activations are
pinned with `constrain`. Nothing here reads a mesh or does I/O.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from distil_jax.model.attention import attend_xla, rope, self_attention
from distil_jax.model.cache import KVCache, write_slots
from distil_jax.model.config import ModelConfig, RematPolicy
from distil_jax.sharding import constrain


class ParamSpec(NamedTuple):
  shape: tuple[int, ...]
  axes: tuple[str, ...]
  init: str  # "normal" | "zeros" | "ones"


def layer_param_specs(cfg: ModelConfig) -> dict[str, ParamSpec]:
  """One decoder layer's parameters (stacked on a leading `layers` axis in the model)."""
  d, f, n, k, h = (
      cfg.hidden_size,
      cfg.intermediate_size,
      cfg.num_heads,
      cfg.num_kv_heads,
      cfg.head_dim,
  )
  return {
      "attn_norm": ParamSpec((d,), ("norm",), "ones"),
      "q_kernel": ParamSpec((d, n, h), ("embed", "q_heads", "head_dim"), "normal"),
      "q_bias": ParamSpec((n, h), ("q_heads", "head_dim"), "zeros"),
      "k_kernel": ParamSpec((d, k, h), ("embed", "kv_heads", "head_dim"), "normal"),
      "k_bias": ParamSpec((k, h), ("kv_heads", "head_dim"), "zeros"),
      "v_kernel": ParamSpec((d, k, h), ("embed", "kv_heads", "head_dim"), "normal"),
      "v_bias": ParamSpec((k, h), ("kv_heads", "head_dim"), "zeros"),
      "o_kernel": ParamSpec((n, h, d), ("q_heads", "head_dim", "embed"), "normal"),
      "mlp_norm": ParamSpec((d,), ("norm",), "ones"),
      "gate_kernel": ParamSpec((d, f), ("embed", "mlp"), "normal"),
      "up_kernel": ParamSpec((d, f), ("embed", "mlp"), "normal"),
      "down_kernel": ParamSpec((f, d), ("mlp", "embed"), "normal"),
  }


def _make_param(spec: ParamSpec, cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Param:
  if spec.init == "normal":
    value = cfg.initializer_range * jax.random.normal(rngs.params(), spec.shape, jnp.float32)
  elif spec.init == "zeros":
    value = jnp.zeros(spec.shape, jnp.float32)
  else:
    value = jnp.ones(spec.shape, jnp.float32)
  return nnx.Param(value.astype(cfg.param_dtype), axes=spec.axes)


class LayerStack(nnx.Module):
  """All decoder layers' parameters, each stacked as [num_layers, ...]."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    for name, spec in layer_param_specs(cfg).items():
      stacked = ParamSpec((cfg.num_layers, *spec.shape), ("layers", *spec.axes), spec.init)
      setattr(self, name, _make_param(stacked, cfg, rngs))

  def arrays(self) -> dict[str, jax.Array]:
    return {
        name: getattr(self, name)[...]
        for name in vars(self)
        if isinstance(getattr(self, name), nnx.Param)
    }


def rms_norm(x_BxTxD, scale_D, eps):
  x32 = x_BxTxD.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return scale_D.astype(x_BxTxD.dtype) * normed.astype(x_BxTxD.dtype)


def decoder_layer(cfg: ModelConfig, x_BxTxD, p, positions_BxT, segment_ids_BxT, kv=None):
  """One pre-norm decoder layer. `kv` is this layer's (k, v) cache slice, or None."""
  dt = cfg.compute_dtype
  w = {name: value.astype(dt) for name, value in p.items()}
  h = rms_norm(x_BxTxD, w["attn_norm"], cfg.rms_norm_eps)
  q = jnp.einsum("btd,dnh->btnh", h, w["q_kernel"]) + w["q_bias"]
  k = jnp.einsum("btd,dkh->btkh", h, w["k_kernel"]) + w["k_bias"]
  v = jnp.einsum("btd,dkh->btkh", h, w["v_kernel"]) + w["v_bias"]
  q = constrain(
      rope(q, positions_BxT, cfg.rope_theta, cfg.rope_scaling),
      ("batch", "seq", "act_heads", "head_dim"),
  )
  k = constrain(
      rope(k, positions_BxT, cfg.rope_theta, cfg.rope_scaling),
      ("batch", "seq", "act_kv_heads", "head_dim"),
  )
  if kv is None:
    attn = self_attention(
        cfg.attention_impl,
        q,
        k,
        v,
        positions_BxT,
        segment_ids_BxT,
        max_segments_per_row=cfg.max_segments_per_row,
    )
  else:
    cache_k, cache_v = write_slots(kv[0], k, positions_BxT), write_slots(kv[1], v, positions_BxT)
    slots_S = jnp.arange(cache_k.shape[1])
    mask_BxTxS = slots_S[None, None, :] <= positions_BxT[:, :, None]
    attn = attend_xla(q, cache_k, cache_v, mask_BxTxS)
    kv = (cache_k, cache_v)
  x = x_BxTxD + jnp.einsum("btnh,nhd->btd", attn, w["o_kernel"])
  x = constrain(x, ("batch", "seq", "act_embed"))
  h = rms_norm(x, w["mlp_norm"], cfg.rms_norm_eps)
  gate = jnp.einsum("btd,df->btf", h, w["gate_kernel"])
  up = jnp.einsum("btd,df->btf", h, w["up_kernel"])
  act = constrain(jax.nn.silu(gate) * up, ("batch", "seq", "act_mlp"))
  x = x + jnp.einsum("btf,fd->btd", act, w["down_kernel"])
  return constrain(x, ("batch", "seq", "act_embed")), kv


# The cuDNN attention kernel's forward primitives (jax/_src/cudnn/fused_attention_stablehlo.py).
_ATTENTION_KERNELS = frozenset({"dot_product_attention_fwd", "dot_product_attention_fwd_wrapper"})


def _and_attention_kernels(policy):
  """`policy`, also saving the fused attention kernel's outputs (its result and softmax
  statistics, O(T) per head). The kernel is a custom call, not a dot, so a `dots` policy alone
  would run the whole attention forward again in the backward pass."""

  def saveable(prim, *avals, **params):
    return prim.name in _ATTENTION_KERNELS or policy(prim, *avals, **params)

  return saveable


_POLICIES = {
    RematPolicy.FULL: jax.checkpoint_policies.nothing_saveable,
    RematPolicy.DOTS: _and_attention_kernels(jax.checkpoint_policies.checkpoint_dots),
    RematPolicy.DOTS_NO_BATCH: _and_attention_kernels(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    ),
}


class Qwen2(nnx.Module):
  """Qwen2 / Qwen2.5 causal LM. `model(ids)` -> logits; with a cache -> (logits, cache)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, v = cfg.hidden_size, cfg.vocab_size
    self.embed = _make_param(ParamSpec((v, d), ("vocab", "embed"), "normal"), cfg, rngs)
    self.layers = LayerStack(cfg, rngs=rngs)
    self.final_norm = _make_param(ParamSpec((d,), ("norm",), "ones"), cfg, rngs)
    if not cfg.tie_word_embeddings:
      self.lm_head = _make_param(ParamSpec((d, v), ("embed", "vocab"), "normal"), cfg, rngs)

  def unembed_matrix(self) -> jax.Array:
    """[D, V]: the LM head, or the tied embedding transposed."""
    if self.cfg.tie_word_embeddings:
      return self.embed[...].T
    return self.lm_head[...]

  def _run(self, input_ids_BxT, positions_BxT, segment_ids_BxT, cache, collect):
    cfg = self.cfg
    b, t = input_ids_BxT.shape
    if positions_BxT is None:
      positions_BxT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    # Gather the table over the data axes first (as FSDP does for every weight), so the
    # lookup never reshards the batch-sharded ids against an fsdp-sharded table.
    table_VxD = constrain(self.embed[...], ("vocab", None))
    x = jnp.take(table_VxD, input_ids_BxT, axis=0).astype(cfg.compute_dtype)
    x = constrain(x, ("batch", "seq", "act_embed"))

    def body(x, xs):
      params, kv = xs
      x, kv = decoder_layer(cfg, x, params, positions_BxT, segment_ids_BxT, kv)
      return x, (kv, x if collect is True else None)

    if cfg.remat_policy is not RematPolicy.NONE:
      body = jax.checkpoint(body, policy=_POLICIES[cfg.remat_policy], prevent_cse=False)
    kv_in = None if cache is None else (cache.k, cache.v)
    layers = self.layers.arrays()
    if collect is True or not collect:
      x, (kv_out, per_layer) = jax.lax.scan(body, x, (layers, kv_in))
    else:
      # Only the asked layers' outputs: the scan is cut after each of them, so no
      # [num_layers, B, T, D] stack exists (a 72B teacher has 80 layers; fusion reads a few).
      assert cache is None, "collecting chosen layers is a training-time feature"
      outputs, start = [], 0
      for end in sorted(set(collect)):
        if not 0 <= end < cfg.num_layers:
          raise ValueError(f"layer {end} outside [0, {cfg.num_layers})")
        segment = jax.tree.map(lambda a: a[start : end + 1], layers)
        x, _ = jax.lax.scan(body, x, (segment, None))
        outputs.append(x)
        start = end + 1
      if start < cfg.num_layers:
        x, _ = jax.lax.scan(body, x, (jax.tree.map(lambda a: a[start:], layers), None))
      by_layer = dict(zip(sorted(set(collect)), outputs))
      per_layer, kv_out = jnp.stack([by_layer[i] for i in collect]), None
    h = rms_norm(x, self.final_norm[...], cfg.rms_norm_eps)
    new_cache = None if cache is None else KVCache(k=kv_out[0], v=kv_out[1])
    return h, per_layer, new_cache

  def hidden_states(
      self,
      input_ids_BxT,
      positions_BxT=None,
      segment_ids_BxT=None,
      *,
      collect: bool | tuple[int, ...] = False,
  ):
    """(final-normed hidden [B,T,D], per-layer outputs): every layer's output
    [num_layers,B,T,D] if `collect` is True, only the listed layers' [len(collect),B,T,D] (in
    the listed order) if it is a tuple of layer indices, None if False."""
    h, per_layer, _ = self._run(input_ids_BxT, positions_BxT, segment_ids_BxT, None, collect)
    return h, per_layer

  def hidden_states_with_cache(self, input_ids_BxT, positions_BxT, *, cache: KVCache):
    """(final-normed hidden [B,T,D], updated cache): a prefill that leaves the choice of
    which positions to unembed to the caller (full prefill logits would be B*T*V floats)."""
    h, _, new_cache = self._run(input_ids_BxT, positions_BxT, None, cache, False)
    return h, new_cache

  def logits(self, h_BxTxD) -> jax.Array:
    w = self.unembed_matrix().astype(self.cfg.compute_dtype)
    logits = jnp.einsum("btd,dv->btv", h_BxTxD, w, preferred_element_type=jnp.float32)
    return constrain(logits, ("batch", "seq", "act_vocab"))

  def __call__(
      self, input_ids_BxT, positions_BxT=None, segment_ids_BxT=None, *, cache: KVCache | None = None
  ):
    h, _, new_cache = self._run(input_ids_BxT, positions_BxT, segment_ids_BxT, cache, False)
    logits = self.logits(h)
    return logits if cache is None else (logits, new_cache)
