"""Continuous batching on device: a persistent KV cache of `slots` rows, one request per slot.

A request is prefilled into a free slot (a batch-1 prefill on that row of the cache), then every
step decodes one token for all slots at once, each at its own position. A finished slot is free at
the next step, so new requests join the running decode between steps instead of waiting for a
batch to end. Stale entries are never attended to: a query at position p sees slots 0..p of its
own row, and a prefill rewrites 0..prompt-1 before any query of the new request runs.

Each row picks its tokens exactly as `Generator.generate` does (the same logit adjustments, the
same PRNG stream per (seed, salt) folded with the token index), so a request's answer does not
depend on the engine that served it or on what shared the device with it. A JSON-mode row (a
`chooser`) has its token picked on the host instead, from its adjusted logits, which the step
brings off the device for those rows only (see generate/constrain.py).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from distil_jax.generate.engine import Completion, Generator, _bucket
from distil_jax.generate.sampling import Sampling, adjust_logits, row_keys, sample, token_logprobs

MAX_BIAS = 300
TOP = 20  # top log-probabilities computed when any live slot asks for them
PARAMS = (
    "temperature_S",
    "top_k_S",
    "top_p_S",
    "repetition_S",
    "frequency_S",
    "presence_S",
    "min_new_S",
    "key_Sx2",
    "bias_ids_SxK",
    "bias_SxK",
)


@dataclasses.dataclass
class _Busy:
  request: object  # what the caller passed to `admit`, handed back when the row finishes
  prompt_len: int
  max_new: int
  num_logprobs: int
  chooser: object = None  # picks the tokens on the host (JSON mode): see generate/constrain.py
  tokens: list = dataclasses.field(default_factory=list)
  logprobs: list = dataclasses.field(default_factory=list)
  top: list = dataclasses.field(default_factory=list)


def _choose(logits_SxV, p, counts_SxV, seen_SxV, step_S, stop_V, *, any_sampling, num_top):
  """(tokens, [chosen logprob, top logprobs, top ids] or Nones, the adjusted logits)."""
  block_SxV = (step_S < p["min_new_S"])[:, None] & stop_V[None, :]
  logits_SxV = adjust_logits(
      logits_SxV,
      prompt_seen_BxV=seen_SxV,
      counts_BxV=counts_SxV,
      repetition_B=p["repetition_S"],
      frequency_B=p["frequency_S"],
      presence_B=p["presence_S"],
      bias_ids_BxK=p["bias_ids_SxK"],
      bias_BxK=p["bias_SxK"],
      block_BxV=block_SxV,
  )
  keys_Sx2 = jax.vmap(jax.random.fold_in)(p["key_Sx2"], step_S)
  token_S = sample(
      logits_SxV,
      keys_Sx2,
      p["temperature_S"],
      p["top_k_S"],
      p["top_p_S"],
      any_sampling=any_sampling,
  )
  logp = token_logprobs(logits_SxV, token_S, num_top=num_top) if num_top else (None,) * 3
  return token_S, list(logp), logits_SxV


def _rows_for_host(logits_SxV, host_J):
  """The adjusted logits of the rows a host-side chooser (JSON mode) picks for, or None."""
  return None if host_J is None else jnp.take(logits_SxV, host_J, axis=0)


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "any_sampling", "num_top"),
    donate_argnames=("cache", "counts_SxV", "seen_SxV"),
)
def _admit(
    graphdef,
    state,
    cache,
    counts_SxV,
    seen_SxV,
    prompt_1xT,
    length,
    slot,
    p,
    stop_V,
    host_J,
    *,
    any_sampling: bool,
    num_top: int,
):
  """Prefills row `slot` with one prompt and picks its first token. The row's counts start at
  zero: `_step` counts each token it is fed."""
  from distil_jax.model import KVCache

  model = nnx.merge(graphdef, state)
  vocab, width = counts_SxV.shape[1], prompt_1xT.shape[1]
  row = lambda a: jax.lax.dynamic_slice_in_dim(a, slot, 1, axis=1)
  sub = KVCache(k=row(cache.k), v=row(cache.v))
  h_1xTxD, sub = model.hidden_states_with_cache(prompt_1xT, jnp.arange(width)[None], cache=sub)
  logits_1xV = model.logits(jax.lax.dynamic_slice_in_dim(h_1xTxD, length - 1, 1, axis=1))[:, 0]
  put = lambda a, b: jax.lax.dynamic_update_slice_in_dim(a, b, slot, axis=1)
  cache = KVCache(k=put(cache.k, sub.k), v=put(cache.v, sub.v))
  in_prompt_T = (jnp.arange(width) < length).astype(jnp.int32)
  seen_1xV = jnp.zeros((1, vocab), jnp.int32).at[0, prompt_1xT[0]].add(in_prompt_T) > 0
  p1 = {k: jax.lax.dynamic_slice_in_dim(v, slot, 1, axis=0) for k, v in p.items()}
  token_1, logp, adjusted_1xV = _choose(
      logits_1xV,
      p1,
      jnp.zeros((1, vocab), jnp.int32),
      seen_1xV,
      jnp.zeros((1,), jnp.int32),
      stop_V,
      any_sampling=any_sampling,
      num_top=num_top,
  )
  counts_1xV = jnp.zeros((1, vocab), jnp.int32)
  counts_SxV = jax.lax.dynamic_update_slice_in_dim(counts_SxV, counts_1xV, slot, axis=0)
  seen_SxV = jax.lax.dynamic_update_slice_in_dim(seen_SxV, seen_1xV, slot, axis=0)
  return token_1, logp, _rows_for_host(adjusted_1xV, host_J), cache, counts_SxV, seen_SxV


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "any_sampling", "num_top"),
    donate_argnames=("cache", "counts_SxV"),
)
def _step(
    graphdef,
    state,
    cache,
    counts_SxV,
    seen_SxV,
    token_R,
    position_R,
    step_R,
    live_R,
    p,
    stop_V,
    host_J,
    *,
    any_sampling: bool,
    num_top: int,
):
  """One new token for each of the first R slots (R = len(token_R): the busy ones are packed
  low, so idle slots above them cost nothing; idle ones below compute at position 0, ignored).
  `token_R` is what each row emitted last, counted here for the penalties: a row whose token the
  host chose (`host_J`, JSON mode) is counted with that token, not with the device's pick."""
  from distil_jax.model import KVCache

  model = nnx.merge(graphdef, state)
  rows = token_R.shape[0]
  head = lambda a: jax.lax.slice_in_dim(a, 0, rows, axis=1)
  sub = KVCache(k=head(cache.k), v=head(cache.v))
  logits_Rx1xV, sub = model(token_R[:, None], position_R[:, None], cache=sub)
  counts_SxV = counts_SxV.at[jnp.arange(rows), token_R].add(live_R.astype(jnp.int32))
  token_R, logp, adjusted_RxV = _choose(
      logits_Rx1xV[:, 0],
      p,
      counts_SxV[:rows],
      seen_SxV[:rows],
      step_R,
      stop_V,
      any_sampling=any_sampling,
      num_top=num_top,
  )
  put = lambda a, b: jax.lax.dynamic_update_slice_in_dim(a, b, 0, axis=1)
  cache = KVCache(k=put(cache.k, sub.k), v=put(cache.v, sub.v))
  return token_R, logp, _rows_for_host(adjusted_RxV, host_J), cache, counts_SxV


class SlotDecoder:
  """`slots` concurrent rows of at most `max_len` positions (prompt + new tokens) each."""

  def __init__(self, generator: Generator, *, slots: int, max_len: int):
    from distil_jax.model import KVCache

    self.g = generator
    cfg = generator.config
    self.slots, self.max_len = slots, max_len
    self.cache = KVCache.init(cfg, slots, max_len, dtype=generator.cache_dtype)
    self.counts_SxV = jnp.zeros((slots, cfg.vocab_size), jnp.int32)
    self.seen_SxV = jnp.zeros((slots, cfg.vocab_size), bool)
    stop = np.zeros(cfg.vocab_size, bool)
    stop[list(generator.stop_ids)] = True
    self.stop_V, self._stop_ids = jnp.asarray(stop), set(generator.stop_ids)
    self.p = {
        "temperature_S": np.zeros(slots, np.float32),
        "top_k_S": np.zeros(slots, np.int32),
        "top_p_S": np.ones(slots, np.float32),
        "repetition_S": np.ones(slots, np.float32),
        "frequency_S": np.zeros(slots, np.float32),
        "presence_S": np.zeros(slots, np.float32),
        "min_new_S": np.zeros(slots, np.int32),
        "key_Sx2": np.zeros((slots, 2), np.uint32),
        "bias_ids_SxK": np.zeros((slots, MAX_BIAS), np.int32),
        "bias_SxK": np.zeros((slots, MAX_BIAS), np.float32),
    }
    self.busy: dict[int, _Busy] = {}
    self.last_S = np.zeros(slots, np.int32)  # the token each slot feeds next

  @property
  def free(self) -> int:
    return self.slots - len(self.busy)

  def _set_params(self, slot: int, s: Sampling, seed: int, salt: int) -> None:
    p = self.p
    p["temperature_S"][slot], p["top_k_S"][slot], p["top_p_S"][slot] = (
        s.temperature,
        s.top_k,
        s.top_p,
    )
    p["repetition_S"][slot], p["frequency_S"][slot], p["presence_S"][slot] = (
        s.repetition_penalty,
        s.frequency_penalty,
        s.presence_penalty,
    )
    p["min_new_S"][slot] = s.min_new_tokens
    p["key_Sx2"][slot] = np.asarray(
        row_keys(np.array([seed], np.uint32), np.array([salt], np.uint32))
    )[0]
    p["bias_ids_SxK"][slot], p["bias_SxK"][slot] = 0, 0.0
    for j, (token, value) in enumerate(s.logit_bias[:MAX_BIAS]):
      p["bias_ids_SxK"][slot, j], p["bias_SxK"][slot, j] = token, value

  def _flags(self, rows) -> dict:
    return {
        "any_sampling": any(self.p["temperature_S"][i] > 0 for i in rows),
        "num_top": TOP if any(self.busy[i].num_logprobs for i in rows) else 0,
    }

  def admit(
      self,
      request,
      prompt,
      *,
      max_new: int,
      sampling: Sampling,
      seed: int,
      salt: int,
      num_logprobs: int = 0,
      chooser=None,
  ) -> list[tuple[object, Completion]]:
    """Puts a request in a free slot; returns it at once if its first token ends it. A `chooser`
    (`constrain.JsonChooser`) picks the row's tokens on the host from its logits."""
    if not prompt or len(prompt) + max_new > self.max_len:
      raise ValueError(
          f"{len(prompt)} prompt + {max_new} new tokens do not fit a slot of "
          f"{self.max_len} positions"
      )
    if max_new <= 0:
      return [
          (
              request,
              Completion([], "length", [] if num_logprobs else None, [] if num_logprobs else None),
          )
      ]
    slot = next(i for i in range(self.slots) if i not in self.busy)
    # A hosted row's device pick is discarded: it decodes greedy there, sparing the sort.
    self._set_params(
        slot,
        sampling if chooser is None else dataclasses.replace(sampling, temperature=0.0),
        seed,
        salt,
    )
    self.busy[slot] = _Busy(request, len(prompt), max_new, num_logprobs, chooser)
    width = min(_bucket(len(prompt), self.g.min_prompt_bucket), self.max_len)
    prompt_1xT = np.zeros((1, width), np.int32)
    prompt_1xT[0, : len(prompt)] = prompt
    try:
      token_1, logp, host, self.cache, self.counts_SxV, self.seen_SxV = _admit(
          self.g.graphdef,
          self.g.state,
          self.cache,
          self.counts_SxV,
          self.seen_SxV,
          prompt_1xT,
          np.int32(len(prompt)),
          np.int32(slot),
          self.p,
          self.stop_V,
          np.zeros(1, np.int32) if chooser is not None else None,
          **self._flags([slot]),
      )
      token_1, logp, host = jax.device_get((token_1, logp, host))
    except Exception:
      del self.busy[slot]
      raise
    return self._take({slot: 0}, token_1, logp, {slot: host[0]} if chooser is not None else {})

  def step(self) -> list[tuple[object, Completion]]:
    """One token for every busy slot; returns the requests that finished."""
    if not self.busy:
      return []
    rows = min(_bucket(max(self.busy) + 1, 1), self.slots)  # few shapes to compile
    live = np.zeros(rows, bool)
    position, step = np.zeros(rows, np.int32), np.zeros(rows, np.int32)
    for i, b in self.busy.items():
      live[i] = True
      step[i] = len(b.tokens)
      position[i] = b.prompt_len + step[i] - 1
    hosted = [i for i, b in self.busy.items() if b.chooser is not None]
    host_J = None
    if hosted:  # padded to a power of two (few shapes) with copies of the first
      host_J = np.full(_bucket(len(hosted), 1), hosted[0], np.int32)
      host_J[: len(hosted)] = hosted
    token_S, logp, host, self.cache, self.counts_SxV = _step(
        self.g.graphdef,
        self.g.state,
        self.cache,
        self.counts_SxV,
        self.seen_SxV,
        self.last_S[:rows],
        position,
        step,
        live,
        {k: v[:rows] for k, v in self.p.items()},
        self.stop_V,
        host_J,
        **self._flags(list(self.busy)),
    )
    token_S, logp, host = jax.device_get((token_S, logp, host))
    host_logits = {slot: host[j] for j, slot in enumerate(hosted)}
    return self._take({i: i for i in self.busy}, token_S, logp, host_logits)

  def _take(self, rows: dict[int, int], token_R, logp, host_logits) -> list:
    """Appends each busy slot's new token (row `rows[slot]` of the outputs; a hosted row's token
    is its chooser's pick from `host_logits[slot]`, None ending it); frees the done."""
    chosen, top, ids = logp
    done = []
    for slot, r in rows.items():
      b = self.busy[slot]
      if slot in host_logits:
        token = b.chooser.choose(host_logits[slot])
        stopped = token is None
      else:
        token = int(token_R[r])
        stopped = token in self._stop_ids
      if not stopped:
        b.tokens.append(token)
        self.last_S[slot] = token
        if b.num_logprobs:  # a hosted row's: its emitted token, under the same distribution
          hosted = slot in host_logits
          b.logprobs.append(
              _log_softmax_at(host_logits[slot], token) if hosted else float(chosen[r])
          )
          b.top.append(
              list(zip(ids[r, : b.num_logprobs].tolist(), top[r, : b.num_logprobs].tolist()))
          )
      if stopped or len(b.tokens) >= b.max_new:
        del self.busy[slot]
        logprobs = (b.logprobs, b.top) if b.num_logprobs else (None, None)
        done.append((b.request, Completion(b.tokens, "stop" if stopped else "length", *logprobs)))
    return done


def _log_softmax_at(logits_V: np.ndarray, token: int) -> float:
  x = logits_V.astype(np.float64)
  top = x.max()
  return float(x[token] - top - np.log(np.exp(x - top).sum()))
