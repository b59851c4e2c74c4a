"""The LM head only where a loss reads it: each row's trained positions are gathered first.

At small widths the vocabulary projection is nearly all of a token's work (width 64, 151,936
rows: 19.4 MFLOPs a token for the LM head against 0.16 M for two layers), and in chat SFT most
positions (template, prompt, padding) carry no loss: in the demo's rows of 64 tokens about 5
are trained. With `positions = K > 0` a loss gathers, in every row, the first K positions whose
mask is set (in order) and runs the LM head, the softmax and the loss on those [B, K] only.
The result is the same sum (the gathered positions are all the trained ones; the rest of the
K slots carry mask 0), and the gradient flows back to the gathered hidden states by the
gather's transpose. Rows keep their batch sharding: the gather is along the sequence.

A row with more than K trained positions would lose some silently, so the train loop checks
every batch on the host before the step (`check_rows`) and stops with a line naming the
step, the field and the count. K = 0 (the default) keeps every position; K = -1 lets the train
command choose K from the data's manifest (`from_manifest`): a bound no batch can exceed.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np


def select(mask_BxL: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """(idx [B, K] int32: each row's first K positions with mask > 0, ascending, padded with 0;
  valid [B, K] float32: 1 where idx is a real trained position)."""
  idx = jax.vmap(lambda m: jnp.nonzero(m > 0, size=k, fill_value=0)[0])(mask_BxL)
  count = jnp.sum(mask_BxL > 0, axis=-1)
  valid = (jnp.arange(k)[None, :] < count[:, None]).astype(jnp.float32)
  return idx.astype(jnp.int32), valid


def take(x_BxL: jax.Array, idx_BxK: jax.Array) -> jax.Array:
  """x [B, L, ...] at each row's positions idx -> [B, K, ...]."""
  idx = idx_BxK.reshape(idx_BxK.shape + (1,) * (x_BxL.ndim - 2))
  return jnp.take_along_axis(x_BxL, idx, axis=1)


def gather(h_BxLxD: jax.Array, inputs: dict, mask_key: str, k: int) -> tuple[jax.Array, dict]:
  """(h, per-position inputs) at each row's first K trained positions, the mask zeroed on the
  padding slots. With k = 0 or k >= L, unchanged."""
  if not k or k >= h_BxLxD.shape[1]:
    return h_BxLxD, inputs
  idx, valid = select(inputs[mask_key], k)
  out = {key: take(v, idx) for key, v in inputs.items()}
  out[mask_key] = out[mask_key] * valid.astype(out[mask_key].dtype)
  return take(h_BxLxD, idx), out


def mask_fields(fields: Mapping) -> tuple[str, ...]:
  """The batch fields that mark trained positions: `loss_mask` and its per-side forms
  (`chosen_loss_mask`, `rejected_loss_mask`)."""
  return tuple(k for k in fields if k == "loss_mask" or k.endswith("_loss_mask"))


class TooManyPositions(ValueError):
  """A row of the batch has more trained positions than `loss_positions`."""


def check_rows(local: Mapping[str, np.ndarray], fields, k: int, step: int) -> None:
  """Refuse, before the step, a batch with a row of more than K trained positions."""
  if k <= 0:
    return
  for key in mask_fields(fields):
    if key not in local:
      continue
    per_row = np.sum(np.asarray(local[key]) > 0, axis=-1)
    if per_row.size and int(per_row.max()) > k:
      raise TooManyPositions(
          f"the batch of step {step} has a row with {int(per_row.max())} trained positions in "
          f"{key!r}, more than loss_positions={k}: raise --config.loss_positions "
          f"(at most data.seq_len) or set it to 0 (every position)"
      )


def bucket(mask_BxL: np.ndarray, minimum: int = 8) -> int:
  """For a host batch outside the train loop (evaluation, reference log-probs): the power of
  two at least every row's count of trained positions (few distinct values, so few
  compilations), or 0 (every position) when that is not shorter than the row."""
  mask = np.asarray(mask_BxL)
  most = int(np.sum(mask > 0, axis=-1).max()) if mask.size else 0
  k = max(minimum, 1 << max(0, most - 1).bit_length())
  return 0 if k >= mask.shape[-1] else k


def from_manifest(manifest: Mapping, seq_len: int, max_documents: int | None, where: str) -> int:
  """`loss_positions=-1`: K from what `prepare` (or `prepare-pairs`) recorded. Chat rows pack
  whole documents first-fit (none is split), so a row holds at most seq_len // (the shortest
  example) documents, each with at most `targets_max` trained positions; a pair row holds one
  side. Rounded up to a multiple of 8; 0 (every position) when that is not shorter than a row."""
  if "pairs" in manifest:
    most, documents = manifest.get("targets_max"), 1
  else:
    tokens = manifest.get("tokens", {})
    most = tokens.get("targets_max")
    documents = seq_len // max(1, int(tokens.get("min", 1)))
    if max_documents:
      documents = min(documents, max_documents)
  if most is None:
    raise ValueError(
        f"{where}: the manifest has no targets_max (written before loss_positions=-1 existed): "
        "prepare the data again, or set loss_positions to a number (0: every position)"
    )
  k = -(-max(1, documents * int(most)) // 8) * 8
  return 0 if k >= seq_len else k
