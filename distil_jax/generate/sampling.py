"""Next-token choice from logits: greedy, or temperature / top-k / top-p sampling, row by row.

Every row of a batch carries its own settings and its own PRNG stream, so a request's answer does
not depend on what it was batched with (the server relies on this).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How one row picks its tokens. `temperature == 0` is greedy (argmax); `top_k == 0` and
  `top_p == 1` switch those filters off. Filters apply in transformers' order: temperature, top-k, top-p.
  """

  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  # Logit adjustments, applied before temperature (see `adjust_logits`); defaults switch them off.
  repetition_penalty: float = 1.0
  frequency_penalty: float = 0.0
  presence_penalty: float = 0.0
  logit_bias: tuple[tuple[int, float], ...] = ()
  min_new_tokens: int = 0

  def __post_init__(self):
    if not self.repetition_penalty > 0.0:
      raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
    if not self.temperature >= 0.0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0

  @property
  def adjusts(self) -> bool:
    return (
        self.repetition_penalty != 1.0
        or self.frequency_penalty != 0.0
        or self.presence_penalty != 0.0
        or bool(self.logit_bias)
        or self.min_new_tokens > 0
    )


GREEDY = Sampling()


def row_keys(seed_B: jax.Array, salt_B: jax.Array) -> jax.Array:
  """One raw PRNG key per row, from the row's seed and a salt (its index within its request)."""
  return jax.vmap(lambda s, i: jax.random.fold_in(jax.random.PRNGKey(s), i))(seed_B, salt_B)


def sample(
    logits_BxV: jax.Array,
    keys_Bx2: jax.Array,
    temperature_B: jax.Array,
    top_k_B: jax.Array,
    top_p_B: jax.Array,
    *,
    any_sampling: bool,
    any_filter: bool = True,
) -> jax.Array:
  """Token ids [B]. With `any_sampling=False` (a static promise that every row is greedy) it is a
  plain argmax. With `any_filter=False` (a static promise that no row sets top-k or top-p) the
  rows sample from their tempered logits as they are: the same distribution without the
  vocabulary sort, which on a CPU costs more than the model (64 rows x 151,936 ids a step)."""
  greedy_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  if not any_sampling:
    return greedy_B
  vocab = logits_BxV.shape[-1]
  scaled_BxV = logits_BxV.astype(jnp.float32) / jnp.maximum(temperature_B, 1e-6)[:, None]
  # A row without filters draws from its tempered logits in vocabulary order, whatever its
  # batch: so its tokens are the same with or without filtered rows beside it.
  plain_B = jax.vmap(jax.random.categorical)(keys_Bx2, scaled_BxV).astype(jnp.int32)
  if not any_filter:
    return jnp.where(temperature_B > 0, plain_B, greedy_B)
  iota_BxV = jnp.broadcast_to(jnp.arange(vocab, dtype=jnp.int32), scaled_BxV.shape)
  neg_sorted_BxV, order_BxV = jax.lax.sort_key_val(-scaled_BxV, iota_BxV, dimension=-1)
  sorted_BxV = -neg_sorted_BxV
  rank_V = jnp.arange(vocab, dtype=jnp.int32)
  keep_BxV = (top_k_B[:, None] <= 0) | (rank_V[None, :] < top_k_B[:, None])
  sorted_BxV = jnp.where(keep_BxV, sorted_BxV, -jnp.inf)
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it is short.
  mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
  keep_BxV = keep_BxV & ((mass_before_BxV < top_p_B[:, None]) | (rank_V[None, :] == 0))
  sorted_BxV = jnp.where(keep_BxV, sorted_BxV, -jnp.inf)
  pick_B = jax.vmap(jax.random.categorical)(keys_Bx2, sorted_BxV)
  sampled_B = jnp.take_along_axis(order_BxV, pick_B[:, None], axis=-1)[:, 0]
  filtered_B = (top_k_B > 0) | (top_p_B < 1.0)
  sampled_B = jnp.where(filtered_B, sampled_B, plain_B)
  return jnp.where(temperature_B > 0, sampled_B, greedy_B)


def token_logprobs(logits_BxV: jax.Array, token_B: jax.Array, *, num_top: int):
  """Log-probabilities under the model's own (untempered) distribution: of the chosen token [B],
  and the `num_top` most likely tokens ([B, K] values, [B, K] ids)."""
  logp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), axis=-1)
  chosen_B = jnp.take_along_axis(logp_BxV, token_B[:, None], axis=-1)[:, 0]
  top_BxK, top_ids_BxK = jax.lax.top_k(logp_BxV, num_top)
  return chosen_B, top_BxK, top_ids_BxK.astype(jnp.int32)


def adjust_logits(
    logits_BxV: jax.Array,
    *,
    prompt_seen_BxV: jax.Array,
    counts_BxV: jax.Array,
    repetition_B: jax.Array,
    frequency_B: jax.Array,
    presence_B: jax.Array,
    bias_ids_BxK: jax.Array,
    bias_BxK: jax.Array,
    block_BxV: jax.Array,
) -> jax.Array:
  """Float32 logits after, in order (vLLM's and transformers' order):
    logit_bias:          l[v] += bias[v]
    repetition (CTRL):   for v in prompt or output, l[v] = l[v] / r if l[v] > 0 else l[v] * r
    frequency/presence:  l[v] -= frequency * count[v] + presence * (count[v] > 0), output only
    blocked (min_tokens): l[v] = -inf while the row is below its minimum length
  `counts_BxV` counts each token among the row's new tokens."""
  rows_B = jnp.arange(logits_BxV.shape[0])[:, None]
  x = logits_BxV.astype(jnp.float32).at[rows_B, bias_ids_BxK].add(bias_BxK)
  seen_BxV = prompt_seen_BxV | (counts_BxV > 0)
  r_Bx1 = repetition_B[:, None]
  x = jnp.where(seen_BxV, jnp.where(x > 0, x / r_Bx1, x * r_Bx1), x)
  counts = counts_BxV.astype(jnp.float32)
  x = x - frequency_B[:, None] * counts - presence_B[:, None] * (counts > 0)
  return jnp.where(block_BxV, -jnp.inf, x)
