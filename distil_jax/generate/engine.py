"""Batched generation on device: one jitted call runs the prefill and the whole decode loop.

Prompts are right-padded into a bucket (batch, prompt length and new-token budget are rounded up to
powers of two, so a server sees few compilations). The KV cache holds `prompt bucket + new bucket`
slots; a row's padding slots are overwritten by its own decode steps and never attended to, because
a query sees only slots up to its own position. The loop is a `lax.while_loop` that exits as soon as
every row has stopped, so a generous bucket costs nothing once the batch is done.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from distil_jax.generate.sampling import (
    GREEDY,
    Sampling,
    adjust_logits,
    row_keys,
    sample,
    token_logprobs,
)


@dataclasses.dataclass(frozen=True)
class Completion:
  """One row's answer: the new tokens (the stop token left out), why it ended ("stop" or
  "length"), and, when asked for, log-probabilities of each new token and its top alternatives."""

  tokens: list[int]
  finish_reason: str
  logprobs: list[float] | None = None
  top_logprobs: list[list[tuple[int, float]]] | None = None


def _bucket(n: int, minimum: int) -> int:
  return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def model_config(model):
  for name in ("cfg", "config"):
    cfg = getattr(model, name, None)
    if cfg is not None:
      return cfg
  raise AttributeError(f"{type(model).__name__} exposes no ModelConfig as .cfg or .config")


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "max_new",
        "any_sampling",
        "any_filter",
        "num_logprobs",
        "cache_dtype",
    ),
)
def _generate_on_device(
    graphdef,
    state,
    prompt_BxT,
    length_B,
    max_new_B,
    temperature_B,
    top_k_B,
    top_p_B,
    seed_B,
    salt_B,
    stop_ids_S,
    adjust,
    *,
    max_new: int,
    any_sampling: bool,
    any_filter: bool,
    num_logprobs: int,
    cache_dtype,
):
  """`adjust` is None (no row adjusts its logits) or the per-row arrays of `adjust_logits`."""
  from distil_jax.model import KVCache

  model = nnx.merge(graphdef, state)
  batch, prompt_len = prompt_BxT.shape
  cache_len = prompt_len + max_new
  cache = KVCache.init(model_config(model), batch, cache_len, dtype=cache_dtype)
  positions_BxT = jnp.broadcast_to(jnp.arange(prompt_len, dtype=jnp.int32), (batch, prompt_len))
  last_BxV, cache = _prefill(model, prompt_BxT, positions_BxT, length_B, cache)
  keys_Bx2 = row_keys(seed_B, salt_B)
  k = max(num_logprobs, 1)

  vocab = model_config(model).vocab_size
  if adjust is not None:
    rows_Bx1 = jnp.arange(batch)[:, None]
    in_prompt_BxT = jnp.arange(prompt_len)[None, :] < length_B[:, None]
    prompt_seen_BxV = (
        jnp.zeros((batch, vocab), jnp.int32)
        .at[rows_Bx1, prompt_BxT]
        .add(in_prompt_BxT.astype(jnp.int32))
        > 0
    )
    stop_V = jnp.zeros((vocab,), bool).at[stop_ids_S].set(stop_ids_S >= 0, mode="drop")

  def choose(logits_BxV, step, out):
    if adjust is not None:
      block_BxV = (out["count_B"] < adjust["min_new_B"])[:, None] & stop_V[None, :]
      logits_BxV = adjust_logits(
          logits_BxV,
          prompt_seen_BxV=prompt_seen_BxV,
          counts_BxV=out["counts_BxV"],
          repetition_B=adjust["repetition_B"],
          frequency_B=adjust["frequency_B"],
          presence_B=adjust["presence_B"],
          bias_ids_BxK=adjust["bias_ids_BxK"],
          bias_BxK=adjust["bias_BxK"],
          block_BxV=block_BxV,
      )
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys_Bx2, step)
    token_B = sample(
        logits_BxV,
        step_keys,
        temperature_B,
        top_k_B,
        top_p_B,
        any_sampling=any_sampling,
        any_filter=any_filter,
    )
    live_B = ~out["done_B"]
    token_B = jnp.where(live_B, token_B, 0)
    out = dict(out)
    out["tokens_BxN"] = out["tokens_BxN"].at[:, step].set(token_B)
    if num_logprobs > 0:
      chosen_B, top_BxK, top_ids_BxK = token_logprobs(logits_BxV, token_B, num_top=k)
      out["logp_BxN"] = out["logp_BxN"].at[:, step].set(chosen_B)
      out["top_BxNxK"] = out["top_BxNxK"].at[:, step].set(top_BxK)
      out["top_ids_BxNxK"] = out["top_ids_BxNxK"].at[:, step].set(top_ids_BxK)
    if adjust is not None:
      out["counts_BxV"] = (
          out["counts_BxV"].at[jnp.arange(batch), token_B].add(live_B.astype(jnp.int32))
      )
    stop_B = live_B & jnp.isin(token_B, stop_ids_S)
    out["count_B"] = out["count_B"] + live_B.astype(jnp.int32)
    out["stopped_B"] = out["stopped_B"] | stop_B
    out["done_B"] = out["done_B"] | stop_B | (out["count_B"] >= max_new_B)
    return token_B, out

  out = {
      "tokens_BxN": jnp.zeros((batch, max_new), jnp.int32),
      "count_B": jnp.zeros((batch,), jnp.int32),
      "stopped_B": jnp.zeros((batch,), bool),
      "done_B": max_new_B <= 0,
  }
  if adjust is not None:
    out["counts_BxV"] = jnp.zeros((batch, vocab), jnp.int32)
  if num_logprobs > 0:
    out["logp_BxN"] = jnp.zeros((batch, max_new), jnp.float32)
    out["top_BxNxK"] = jnp.zeros((batch, max_new, k), jnp.float32)
    out["top_ids_BxNxK"] = jnp.zeros((batch, max_new, k), jnp.int32)
  token_B, out = choose(last_BxV, 0, out)

  def keep_going(carry):
    step, _, _, out = carry
    return (step < max_new) & ~jnp.all(out["done_B"])

  def decode_step(carry):
    step, token_B, cache, out = carry
    # Rows that are done keep running (the batch is static) at a clamped, harmless slot.
    position_B = jnp.minimum(length_B + step - 1, cache_len - 1)
    logits_Bx1xV, cache = model(token_B[:, None], position_B[:, None], cache=cache)
    token_B, out = choose(logits_Bx1xV[:, 0], step, out)
    return step + 1, token_B, cache, out

  _, _, _, out = jax.lax.while_loop(keep_going, decode_step, (jnp.int32(1), token_B, cache, out))
  return out


@functools.partial(jax.jit, static_argnames=("graphdef", "num_top"))
def _score_on_device(graphdef, state, tokens_BxT, *, num_top: int):
  """Log-probability of each token given the ones before it ([B, T-1]) and the `num_top` most
  likely tokens at each of those positions."""
  model = nnx.merge(graphdef, state)
  logits_BxTxV = model(tokens_BxT)
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV[:, :-1].astype(jnp.float32), axis=-1)
  chosen_BxT = jnp.take_along_axis(logp_BxTxV, tokens_BxT[:, 1:, None], axis=-1)[..., 0]
  top_BxTxK, ids_BxTxK = jax.lax.top_k(logp_BxTxV, num_top)
  return chosen_BxT, top_BxTxK, ids_BxTxK


def _prefill(model, prompt_BxT, positions_BxT, length_B, cache):
  """Fills the cache and returns the logits [B, V] at each row's last prompt token. Only those
  rows go through the LM head: full prefill logits would be B*T*V floats (10 GB at B=32, T=512)."""
  h_BxTxD, cache = model.hidden_states_with_cache(prompt_BxT, positions_BxT, cache=cache)
  h_Bx1xD = jnp.take_along_axis(h_BxTxD, (length_B - 1)[:, None, None], axis=1)
  return model.logits(h_Bx1xD)[:, 0], cache


class Generator:
  """Generation with one model: holds its split state, the stop ids and the bucket policy."""

  def __init__(
      self,
      model: nnx.Module,
      *,
      stop_ids: Sequence[int] = (),
      cache_dtype=None,
      min_prompt_bucket: int = 16,
      min_new_bucket: int = 16,
  ):
    self.graphdef, self.state = nnx.split(model)
    self.config = model_config(model)
    self.stop_ids = tuple(sorted({int(i) for i in stop_ids}))
    self.cache_dtype = cache_dtype
    self.min_prompt_bucket = min_prompt_bucket
    self.min_new_bucket = min_new_bucket

  def generate(
      self,
      prompts: Sequence[Sequence[int]],
      *,
      max_new_tokens: int | Sequence[int],
      sampling: Sampling | Sequence[Sampling] = GREEDY,
      seed: int | Sequence[int] = 0,
      salt: Sequence[int] | None = None,
      num_logprobs: int = 0,
  ) -> list[Completion]:
    """Completions for a batch of token-id prompts. A single `seed` gives row i the stream
    (seed, i); a list gives each row its own stream (seed_i, salt_i or 0), so a row's sample is
    the same whatever else shares its batch. `num_logprobs > 0` also returns log-probabilities."""
    n = len(prompts)
    if n == 0:
      return []
    max_new = _as_list(max_new_tokens, n, "max_new_tokens")
    samplings = _as_list(sampling, n, "sampling")
    if isinstance(seed, (int, np.integer)):
      seeds, salts = [int(seed)] * n, list(range(n))
    else:
      seeds, salts = _as_list(seed, n, "seed"), _as_list(salt or 0, n, "salt")
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
      raise ValueError("every prompt needs at least one token")
    limit = self.config.max_position_embeddings
    for i, (length, new) in enumerate(zip(lengths, max_new)):
      if length + new > limit:
        raise ValueError(
            f"prompt {i}: {length} prompt + {new} new tokens exceed the "
            f"model's {limit} positions"
        )

    batch = _bucket(n, 1)
    prompt_len = _bucket(max(lengths), self.min_prompt_bucket)
    new_len = _bucket(max(max(max_new), 1), self.min_new_bucket)
    prompt_BxT = np.zeros((batch, prompt_len), np.int32)
    for i, p in enumerate(prompts):
      prompt_BxT[i, : len(p)] = p
    pad = batch - n
    length_B = np.array(lengths + [1] * pad, np.int32)
    max_new_B = np.array(max_new + [0] * pad, np.int32)
    temperature_B = np.array([s.temperature for s in samplings] + [0.0] * pad, np.float32)
    top_k_B = np.array([s.top_k for s in samplings] + [0] * pad, np.int32)
    top_p_B = np.array([s.top_p for s in samplings] + [1.0] * pad, np.float32)
    seed_B = np.array(seeds + [0] * pad, np.uint32)
    salt_B = np.array(salts + [0] * pad, np.uint32)
    stop_ids_S = np.array(self.stop_ids or (-1,), np.int32)
    adjust = _adjust_arrays(samplings, pad) if any(s.adjusts for s in samplings) else None
    out = _generate_on_device(
        self.graphdef,
        self.state,
        prompt_BxT,
        length_B,
        max_new_B,
        temperature_B,
        top_k_B,
        top_p_B,
        seed_B,
        salt_B,
        stop_ids_S,
        adjust,
        max_new=new_len,
        any_sampling=any(not s.greedy for s in samplings),
        any_filter=any(s.top_k > 0 or s.top_p < 1.0 for s in samplings if not s.greedy),
        num_logprobs=_bucket(num_logprobs, 1) if num_logprobs > 0 else 0,
        cache_dtype=self.cache_dtype,
    )
    out = jax.device_get(out)
    return [self._completion(out, i, num_logprobs) for i in range(n)]

  def score(self, prompts: Sequence[Sequence[int]], *, num_top: int = 1):
    """For each prompt, (log p(token_t | tokens_<t) for t >= 1, the `num_top` most likely
    (id, logprob) at each of those positions): what a log-likelihood harness asks for."""
    if not prompts:
      return []
    length = _bucket(max(len(p) for p in prompts), self.min_prompt_bucket)
    tokens_BxT = np.zeros((_bucket(len(prompts), 1), length), np.int32)
    for i, p in enumerate(prompts):
      tokens_BxT[i, : len(p)] = p
    k = _bucket(max(num_top, 1), 1)
    chosen, top, ids = jax.device_get(
        _score_on_device(self.graphdef, self.state, tokens_BxT, num_top=k)
    )
    return [
        (
            chosen[i, : len(p) - 1].tolist(),
            [
                list(zip(ids[i, t, :num_top].tolist(), top[i, t, :num_top].tolist()))
                for t in range(len(p) - 1)
            ],
        )
        for i, p in enumerate(prompts)
    ]

  @staticmethod
  def _completion(out, i: int, num_logprobs: int) -> Completion:
    count, stopped = int(out["count_B"][i]), bool(out["stopped_B"][i])
    kept = count - 1 if stopped else count
    tokens = out["tokens_BxN"][i, :kept].tolist()
    if num_logprobs <= 0:
      return Completion(tokens, "stop" if stopped else "length")
    logprobs = out["logp_BxN"][i, :kept].tolist()
    top = [
        list(
            zip(
                out["top_ids_BxNxK"][i, t, :num_logprobs].tolist(),
                out["top_BxNxK"][i, t, :num_logprobs].tolist(),
            )
        )
        for t in range(kept)
    ]
    return Completion(tokens, "stop" if stopped else "length", logprobs, top)


def _adjust_arrays(samplings: Sequence[Sampling], pad: int) -> dict:
  """The per-row inputs of `adjust_logits`; logit_bias lists are padded with +0 on token 0."""
  rows = list(samplings) + [GREEDY] * pad
  k = _bucket(max(len(s.logit_bias) for s in rows), 1)
  bias_ids, bias = np.zeros((len(rows), k), np.int32), np.zeros((len(rows), k), np.float32)
  for i, s in enumerate(rows):
    for j, (token, value) in enumerate(s.logit_bias):
      bias_ids[i, j], bias[i, j] = token, value
  column = lambda name, dtype: np.array([getattr(s, name) for s in rows], dtype)
  return {
      "repetition_B": column("repetition_penalty", np.float32),
      "frequency_B": column("frequency_penalty", np.float32),
      "presence_B": column("presence_penalty", np.float32),
      "min_new_B": column("min_new_tokens", np.int32),
      "bias_ids_BxK": bias_ids,
      "bias_BxK": bias,
  }


def _as_list(value, n: int, name: str) -> list:
  if isinstance(value, (list, tuple)):
    if len(value) != n:
      raise ValueError(f"{name}: {len(value)} values for {n} prompts")
    return list(value)
  return [value] * n


def generate(
    model: nnx.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    sampling: Sampling = GREEDY,
    stop_ids: Sequence[int] = (),
    seed: int = 0,
) -> list[list[int]]:
  """New token ids for each prompt (stop token left out). Greedy unless `sampling` says otherwise."""
  completions = Generator(model, stop_ids=stop_ids).generate(
      prompts, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed
  )
  return [c.tokens for c in completions]
