"""Packed rows -> cuDNN's ragged layout: per-run lengths and offsets, checked against a
brute-force reading of the rows and, through jax's own fix-up of those arrays, against the
XLA attention mask. Also: the field that selects the path survives every config bridge."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distil_jax import checkpoints
from distil_jax.model import ModelConfig
from distil_jax.model.attention import (
    attend_xla,
    cudnn_attention,
    packed_layout,
    segment_causal_mask,
)


def _reference_layout(row, num_slots):
  """Runs of equal ids, read one token at a time; runs past the last slot join it."""
  runs, start = [], 0
  for _, group in itertools.groupby(row):
    length = len(list(group))
    runs.append([start, length])
    start += length
  if len(runs) > num_slots:
    runs[num_slots - 1 :] = [[runs[num_slots - 1][0], sum(l for _, l in runs[num_slots - 1 :])]]
  unused = num_slots - len(runs)
  seqlens = [l for _, l in runs] + [-1] * unused
  offsets = [s for s, _ in runs] + [-1] * (unused + 1)
  return seqlens, offsets


def _document_row(lengths, t):
  """Documents numbered 1, 2, ... along the row, then padding 0 up to `t`."""
  row = [i + 1 for i, n in enumerate(lengths) for _ in range(n)]
  return row + [0] * (t - len(row))


T, DOCS = 32, 3
ROWS = {
    "one document, whole row": _document_row([32], T),
    "one document, then padding": _document_row([20], T),
    "all padding": _document_row([], T),
    "max documents, whole row": _document_row([10, 12, 10], T),
    "max documents, then padding": _document_row([5, 7, 9], T),
    "single-token documents": _document_row([1, 1, 1], T),
    "more documents than slots": _document_row([4, 4, 4, 4, 4], T),
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_layout_matches_a_token_by_token_reading(name):
  row = ROWS[name]
  layout = packed_layout(jnp.asarray([row], jnp.int32), DOCS + 1)
  seqlens, offsets = _reference_layout(row, DOCS + 1)
  np.testing.assert_array_equal(layout.seqlens_BxM[0], seqlens)
  np.testing.assert_array_equal(layout.offsets_BxM1[0], offsets)


def test_overflowing_row_merges_the_surplus_documents_into_the_last_slot():
  layout = packed_layout(jnp.asarray([ROWS["more documents than slots"]], jnp.int32), DOCS + 1)
  # Documents 1-3 keep their slots; 4, 5 and the padding share slot 4.
  np.testing.assert_array_equal(layout.seqlens_BxM[0], [4, 4, 4, 20])
  np.testing.assert_array_equal(layout.offsets_BxM1[0], [0, 4, 8, 12, -1])


def test_every_token_lies_in_exactly_one_slot_on_random_rows():
  rng = np.random.default_rng(0)
  rows = []
  for _ in range(64):
    lengths = rng.integers(1, 12, rng.integers(0, 8))
    lengths = lengths[np.cumsum(lengths) <= T]
    rows.append(_document_row(lengths.tolist(), T))
  layout = packed_layout(jnp.asarray(rows, jnp.int32), DOCS + 1)
  for row, seqlens, offsets in zip(rows, layout.seqlens_BxM, layout.offsets_BxM1):
    ref_seqlens, ref_offsets = _reference_layout(row, DOCS + 1)
    np.testing.assert_array_equal(seqlens, ref_seqlens)
    np.testing.assert_array_equal(offsets, ref_offsets)
    assert int(jnp.sum(jnp.maximum(seqlens, 0))) == T


def test_layout_traces_under_jit_with_static_slots():
  rows = jnp.asarray([ROWS["max documents, then padding"]], jnp.int32)
  jitted = jax.jit(packed_layout, static_argnums=1)(rows, DOCS + 1)
  eager = packed_layout(rows, DOCS + 1)
  np.testing.assert_array_equal(jitted.seqlens_BxM, eager.seqlens_BxM)
  np.testing.assert_array_equal(jitted.offsets_BxM1, eager.offsets_BxM1)


def _ragged_attention_as_cudnn_reads_it(q, k, v, layout):
  """Causal attention within each sequence of the arrays jax hands to cuDNN (lengths and
  element offsets over the whole flattened batch). Tokens no sequence covers stay NaN."""
  b, t, n, h = q.shape
  seqlens, _, offsets, _ = cudnn_attention._fix_seqlen_offsets(  # noqa: SLF001
      layout.seqlens_BxM, layout.seqlens_BxM, layout.offsets_BxM1, layout.offsets_BxM1, q, k
  )
  flat = [np.asarray(x, np.float32).reshape(b * t, n, h) for x in (q, k, v)]
  out = np.full((b * t, n, h), np.nan, np.float32)
  for length, offset in zip(np.ravel(seqlens), np.ravel(offsets)):  # sequence i: length i, offset i
    if length <= 0:
      continue
    first = offset // (n * h)
    span = slice(first, first + length)
    scores = np.einsum("tnh,snh->nts", flat[0][span], flat[1][span]) * h**-0.5
    scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    out[span] = np.einsum("nts,snh->tnh", probs / probs.sum(-1, keepdims=True), flat[2][span])
  return out.reshape(b, t, n, h)


def test_cudnn_reading_of_the_layout_is_the_xla_mask_on_every_document_token():
  names = [
      "one document, then padding",
      "max documents, whole row",
      "max documents, then padding",
      "all padding",
      "single-token documents",
  ]
  segments = np.asarray([ROWS[n] for n in names], np.int32)
  positions = np.zeros_like(segments)
  for row, seg in zip(positions, segments):
    for _, idx in itertools.groupby(range(T), key=lambda i, s=seg: s[i]):
      idx = list(idx)
      row[idx] = np.arange(len(idx))
  q, k, v = (
      jax.random.normal(key, (len(names), T, 4, 8))
      for key in jax.random.split(jax.random.key(0), 3)
  )
  layout = packed_layout(jnp.asarray(segments), DOCS + 1)
  ragged = _ragged_attention_as_cudnn_reads_it(q, k, v, layout)
  assert not np.isnan(ragged).any()  # every token covered: cuDNN writes every output row
  mask = segment_causal_mask(positions, segments, positions, segments)
  reference = attend_xla(q, k, v, mask)
  documents = segments != 0  # padding rows: 0 in XLA; the cuDNN path zeroes them after the call
  np.testing.assert_allclose(ragged[documents], np.asarray(reference)[documents], atol=1e-5)


# --- the config field ---------------------------------------------------------------------
def test_max_segments_per_row_survives_checkpoint_json_and_defaults_for_old_files():
  cfg = ModelConfig.tiny(max_segments_per_row=16)
  saved = json.loads(json.dumps(checkpoints.config_to_json(cfg)))
  assert checkpoints.config_from_json(saved) == cfg
  del saved["max_segments_per_row"]  # a checkpoint written before the field existed
  assert checkpoints.config_from_json(saved).max_segments_per_row == 0


def test_max_segments_per_row_is_a_runtime_choice_outside_the_hf_config():
  cfg = ModelConfig.tiny(
      max_segments_per_row=8, vocab_size=64, hidden_size=64, num_heads=4, head_dim=16
  )
  hf = cfg.to_hf()
  assert "max_segments_per_row" not in hf
  assert ModelConfig.from_hf(hf, max_segments_per_row=8).max_segments_per_row == 8
  with pytest.raises(ValueError, match="max_segments_per_row"):
    ModelConfig.tiny(max_segments_per_row=-1)
