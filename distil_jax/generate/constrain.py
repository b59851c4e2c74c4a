"""JSON mode on the host: each step, the most likely (greedy) or the sampled token among those whose
text keeps the output a prefix of a JSON object, from one row of logits brought off the device.

The vocabulary's text is decoded once per tokenizer (`TokenTable`); a token that is not whole
UTF-8 text on its own (a byte fragment) or is special is never chosen. A step costs no Python loop
over the vocabulary: a vectorised mask drops the tokens whose first non-blank character cannot come
next, and the rest are tried in the order the row's sampling would pick them, until one fits:

* greedy: descending logits;
* sampling: descending `logits / T + Gumbel noise` over the tokens temperature, top-k and top-p
  keep. The first valid token in that order is the Gumbel-max sample of the processed distribution
  restricted to the valid tokens: exactly what rejection (draw, drop an invalid token, redraw)
  would give. If that set is empty, the most likely valid token is taken.

Budget: a token is accepted only if the shortest closing text after it (`json_grammar.closing`,
one token per character) plus the stop token still fits in the row's `max_new`, so the object is
closed in time whenever `max_new >= 3`; once the remaining budget only just suffices, the closing
text is written (the most likely token that is a prefix of it). Once the object is complete the
row stops (`finish_reason: "stop"`).
"""

from __future__ import annotations

import bisect
import dataclasses
import functools

import numpy as np

from distil_jax.generate import json_grammar as g
from distil_jax.generate.sampling import Sampling

_NON_ASCII, _BLANK = 128, 129  # first-character classes beside the 128 ASCII codes
_BLANKS = " \t\n\r"
_FIRST_TRIES = 16  # candidates ranked by a partial sort before falling back to a full one
_TOP_P_HEAD = 4096  # top-p sorts this many tokens when they hold the mass, else all


@dataclasses.dataclass(frozen=True)
class TokenTable:
  """Each token id's text, whether JSON mode may emit it, and the class of its first non-blank
  character (ASCII code, 128 other, 129 all blank); `ids_by_text` finds the tokens of a text, and
  the texts without their leading blanks, sorted (`stripped`, ids alongside), find the tokens that
  fit a literal continuation (`literal_mask`)."""

  texts: tuple[str, ...]
  usable_V: np.ndarray
  first_V: np.ndarray
  ids_by_text: dict
  stripped: list
  stripped_ids: np.ndarray
  blank_ids: np.ndarray

  @classmethod
  def from_tokenizer(cls, tokenizer, vocab_size: int) -> TokenTable:
    """Special and added tokens, byte fragments (not UTF-8 on their own) and the ids past the
    tokenizer's end (padding of the embedding) are unusable."""
    n = min(len(tokenizer), vocab_size)
    decoded = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=True)
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    texts = ["" if i in special or "\ufffd" in t else t for i, t in enumerate(decoded)]
    # The chooser assumes a token's text does not depend on its neighbours (byte-level BPE).
    probe = '{"a b": [1, -0.5e+3, true, null], "s": "x\\"y z"}'
    if "".join(texts[i] for i in tokenizer(probe, add_special_tokens=False)["input_ids"]) != probe:
      raise ValueError(
          f"{type(tokenizer).__name__}: its tokens' texts depend on their neighbours, which JSON "
          "mode cannot follow (it needs a byte-level BPE vocabulary such as Qwen2.5's)"
      )
    return cls.from_texts(texts + [""] * (vocab_size - n))

  @classmethod
  def from_texts(cls, texts) -> TokenTable:
    """The table of a vocabulary given as each id's text ("" for a token never to emit)."""
    texts = tuple(texts)
    first = np.full(len(texts), _BLANK, np.uint8)
    ids_by_text: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
      if t:
        ids_by_text.setdefault(t, []).append(i)
        s = t.lstrip(_BLANKS)
        if s:
          first[i] = ord(s[0]) if ord(s[0]) < 128 else _NON_ASCII
    pairs = sorted((t.lstrip(_BLANKS), i) for i, t in enumerate(texts) if t.lstrip(_BLANKS))
    blank = [i for i, t in enumerate(texts) if t and not t.lstrip(_BLANKS)]
    return cls(
        texts,
        np.array([bool(t) for t in texts]),
        first,
        ids_by_text,
        [t for t, _ in pairs],
        np.array([i for _, i in pairs], np.int64),
        np.array(blank, np.int64),
    )

  def literal_mask(self, continuations: list[str], blank_ok: bool) -> np.ndarray:
    """The tokens that can be valid where the text must go on with one of `continuations`
    (after blanks, if `blank_ok`): their text, leading blanks aside, is a prefix of one or
    starts with one. A superset of the valid tokens, found by binary search, not a scan."""
    mask_V = np.zeros(self.usable_V.size, bool)
    for c in continuations:
      for j in range(1, len(c) + 1):  # the texts that are a prefix of c
        lo = bisect.bisect_left(self.stripped, c[:j])
        hi = bisect.bisect_right(self.stripped, c[:j])
        mask_V[self.stripped_ids[lo:hi]] = True
      lo = bisect.bisect_left(self.stripped, c)  # the texts that start with c
      hi = bisect.bisect_left(self.stripped, c + "\U0010ffff")
      mask_V[self.stripped_ids[lo:hi]] = True
    if blank_ok:
      mask_V[self.blank_ids] = True
    return mask_V


@functools.lru_cache(maxsize=None)
def _first_allowed(mode: int, count: int) -> np.ndarray | None:
  """Which first-non-blank classes a token may have in `mode` (None: any, inside strings)."""
  value = '"{[-0123456789tfn'
  allowed = {
      g.START: "{",
      g.OBJ_OPEN: '"}',
      g.OBJ_KEY: '"',
      g.COLON: ":",
      g.VALUE: value,
      g.ARR_OPEN: value + "]",
      g.AFTER_VALUE: ",}]",
      g.DONE: "",
      g.NUM_MINUS: "0123456789",
      g.NUM_ZERO: ".eE,}]",
      g.NUM_INT: "0123456789.eE,}]",
      g.NUM_DOT: "0123456789",
      g.NUM_FRAC: "0123456789eE,}]",
      g.NUM_E: "0123456789+-",
      g.NUM_ESIGN: "0123456789",
      g.NUM_EXP: "0123456789,}]",
  }
  for mode_, word in ((g.LIT_TRUE, "true"), (g.LIT_FALSE, "false"), (g.LIT_NULL, "null")):
    if mode == mode_:
      allowed[mode] = word[count]
  if mode not in allowed:
    return None
  table = np.zeros(130, bool)
  table[[ord(c) for c in allowed[mode]]] = True
  # Blank-led tokens: their first non-blank character is what the mask sees; all-blank ones pass.
  table[_BLANK] = True
  return table


def processed_logits(logits_V: np.ndarray, s: Sampling) -> np.ndarray:
  """float64 logits / temperature with -inf outside top-k and top-p (transformers' order). Top-p
  sorts only the head of the distribution when its first 4096 tokens already hold the mass."""
  x = logits_V.astype(np.float64) / max(s.temperature, 1e-6)
  if 0 < s.top_k < x.size:
    x[x < np.partition(x, -s.top_k)[-s.top_k]] = -np.inf
  if s.top_p < 1.0:
    kept = np.flatnonzero(np.isfinite(x))
    p = np.exp(x[kept] - x[kept].max())
    p /= p.sum()
    head = kept.size
    if kept.size > _TOP_P_HEAD:
      part = np.argpartition(-p, _TOP_P_HEAD)[:_TOP_P_HEAD]
      head = _TOP_P_HEAD if p[part].sum() >= s.top_p else kept.size
    key = -p.astype(np.float32)  # a float32 sort is four times faster; ties are measure-zero
    order = np.argsort(key) if head == kept.size else part[np.argsort(key[part])]
    before = np.cumsum(p[order]) - p[order]
    drop = np.ones(kept.size, bool)
    drop[order[(before < s.top_p) | (np.arange(head) == 0)]] = False
    x[kept[drop]] = -np.inf
  return x


class JsonChooser:
  """One row's JSON-mode token choice; `choose` is called once per step with the row's logits
  after logit_bias and penalties, and returns the token, or None when the object is complete."""

  def __init__(
      self,
      table: TokenTable,
      sampling: Sampling,
      seed: int,
      salt: int,
      max_new: int,
      grammar=g.OBJECT,
  ):
    """`grammar`: `json_grammar.OBJECT` (any object) or a `json_schema.SchemaGrammar`."""
    self.table, self.sampling, self.max_new = table, sampling, max_new
    self.seed, self.salt, self.grammar = seed, salt, grammar
    self.state = grammar.initial
    self.emitted = 0

  def choose(self, logits_V: np.ndarray) -> int | None:
    grammar = self.grammar
    if grammar.is_complete(self.state):
      return None
    remaining = self.max_new - self.emitted  # steps left, this one included
    slack = remaining - 1 - len(grammar.closing(self.state)) - 1
    token = None
    if slack > 0:
      mask_V = self.table.usable_V
      lexical = grammar.lexical(self.state)
      allowed = _first_allowed(lexical[1], lexical[2])
      if allowed is not None:
        mask_V = mask_V & allowed[self.table.first_V]
      literal = grammar.continuations(self.state)
      if literal is not None:  # keys and enum values of a schema: a few texts can follow
        mask_V = mask_V & self.table.literal_mask(*literal)
      if not self.sampling.greedy:
        token = self._first_valid(self._sample_keys(logits_V), mask_V, remaining)
      if token is None:
        token = self._first_valid(logits_V, mask_V, remaining)
    if token is None:  # the budget is tight: write the closing text
      token = self._closing_token(logits_V)
    self.state = grammar.advance(self.state, self.table.texts[token])
    self.emitted += 1
    return token

  def _sample_keys(self, logits_V: np.ndarray) -> np.ndarray:
    x = processed_logits(logits_V[: self.table.usable_V.size], self.sampling)
    kept = np.flatnonzero(np.isfinite(x))
    rng = np.random.default_rng([self.seed, self.salt, self.emitted])
    x[kept] += rng.gumbel(size=kept.size)
    return x

  def _fits(self, token: int, remaining: int) -> bool:
    state = self.grammar.advance(self.state, self.table.texts[token])
    return state is not None and len(self.grammar.closing(state)) + 1 <= remaining - 1

  def _first_valid(self, keys_V: np.ndarray, mask_V: np.ndarray, remaining: int) -> int | None:
    keys_V = keys_V[: mask_V.size]
    candidates = np.flatnonzero(mask_V & (keys_V > -np.inf))
    if candidates.size == 0:
      return None
    keys = -keys_V[candidates]
    n = min(_FIRST_TRIES, candidates.size)
    head = np.argpartition(keys, n - 1)[:n] if n < candidates.size else np.arange(n)
    head = head[np.argsort(keys[head], kind="stable")]
    for i in head:
      if self._fits(int(candidates[i]), remaining):
        return int(candidates[i])
    rest = np.argsort(keys, kind="stable")
    seen = set(head.tolist())
    for i in rest:
      if int(i) not in seen and self._fits(int(candidates[i]), remaining):
        return int(candidates[i])
    return None

  def _closing_token(self, logits_V: np.ndarray) -> int:
    text = self.grammar.closing(self.state)
    ids = [i for j in range(1, len(text) + 1) for i in self.table.ids_by_text.get(text[:j], ())]
    return max(ids, key=lambda i: logits_V[i])
