"""Stream a HF Qwen2 checkpoint directory into sharded parameters, one tensor at a time.

The host holds at most one HF tensor (and its transposed copy) at once; each is placed
straight into its shards, and per-layer tensors are written into the stacked parameter
in place (donated), so no second copy of the model ever exists.
"""

from __future__ import annotations

import json
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from distil_jax.hf.mapping import IGNORED_SUFFIXES, entries, our_path
from distil_jax.hf.safetensors_io import CheckpointError, SafetensorsFile
from distil_jax.model import ModelConfig, Qwen2, abstract_model
from distil_jax.sharding import DEFAULT_RULES, Rules, make_mesh, MeshConfig, state_shardings


def read_config(path: str, **overrides) -> ModelConfig:
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise CheckpointError(f"{path}: no config.json (is this a HF checkpoint directory?)")
  try:
    with open(cfg_path) as f:
      hf = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{cfg_path}: invalid JSON: {e}") from None
  try:
    return ModelConfig.from_hf(hf, source=cfg_path, **overrides)
  except (KeyError, ValueError) as e:
    raise CheckpointError(f"{cfg_path}: {e}") from None


def weight_map(path: str) -> dict[str, str]:
  """HF tensor name -> file path, from the index or the single safetensors file."""
  index = os.path.join(path, "model.safetensors.index.json")
  single = os.path.join(path, "model.safetensors")
  if os.path.isfile(index):
    try:
      with open(index) as f:
        mapping = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise CheckpointError(f"{index}: not a safetensors index: {e}") from None
    for fname in sorted(set(mapping.values())):
      if not os.path.isfile(os.path.join(path, fname)):
        raise CheckpointError(f"{index}: lists {fname}, which is missing from {path}")
    return {k: os.path.join(path, v) for k, v in mapping.items()}
  if os.path.isfile(single):
    return {name: single for name in SafetensorsFile(single).tensors}
  shards = [f for f in os.listdir(path) if f.endswith(".safetensors")]
  if shards:
    raise CheckpointError(
        f"{path}: {len(shards)} safetensors shards but no " "model.safetensors.index.json"
    )
  raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")


def _check_keys(cfg: ModelConfig, available: dict[str, str], path: str):
  expected = {e.name for e in entries(cfg)}
  droppable = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
  missing = sorted(expected - set(available))
  unexpected = sorted(
      k for k in set(available) - expected - droppable if not k.endswith(IGNORED_SUFFIXES)
  )
  if missing or unexpected:
    parts = []
    if missing:
      parts.append(f"missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
      parts.append(f"unexpected tensors {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    raise CheckpointError(f"{path}: {'; '.join(parts)}")


def _walk(tree, path):
  for name in path:
    tree = tree[name]
  return tree


@partial(jax.jit, donate_argnums=0)
def _set_layer(stacked, layer_value, index):
  """The layer index is traced, so one compilation serves every layer of a tensor kind."""
  return stacked.at[index].set(layer_value)


def _place(array: np.ndarray, sharding) -> jax.Array:
  """Put one host array into its shards (works across processes: each writes its own)."""
  return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def load_hf_state(path: str, cfg: ModelConfig, mesh, rules: Rules = DEFAULT_RULES) -> Qwen2:
  files = weight_map(path)
  _check_keys(cfg, files, path)
  graphdef, abs_state = nnx.split(abstract_model(cfg))
  shardings = state_shardings(abs_state, mesh, rules)
  headers: dict[str, SafetensorsFile] = {}
  values: dict[tuple[str, ...], jax.Array] = {}

  for entry in entries(cfg):
    fpath = files[entry.name]
    st = headers.get(fpath) or headers.setdefault(fpath, SafetensorsFile(fpath))
    if entry.name not in st.tensors:
      raise CheckpointError(
          f"{fpath}: tensor {entry.name!r} listed in the index is not in the file"
      )
    key = our_path(entry.rule)
    target = _walk(abs_state, key)
    sharding = _walk(shardings, key).get_value()
    layer_shape = target.shape[1:] if entry.layer is not None else target.shape
    info = st.tensors[entry.name]
    want = entry.rule.hf_shape(tuple(layer_shape))
    if info["shape"] != want:
      raise CheckpointError(
          f"{fpath}: tensor {entry.name!r} has shape {info['shape']}, "
          f"expected {want} for this config.json"
      )
    if not np.issubdtype(info["dtype"], np.floating) and info["dtype"].name != "bfloat16":
      raise CheckpointError(
          f"{fpath}: tensor {entry.name!r} has dtype {info['dtype']}, "
          "expected a floating-point type"
      )
    host = entry.rule.to_ours(st.read(entry.name), tuple(layer_shape)).astype(target.dtype)
    if entry.layer is None:
      values[key] = _place(host, sharding)
      continue
    layer_sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(*sharding.spec[1:])
    )
    if key not in values:
      values[key] = jax.jit(
          partial(jnp.zeros, target.shape, target.dtype), out_shardings=sharding
      )()
    values[key] = _set_layer(values[key], _place(host, layer_sharding), np.int32(entry.layer))
    del host

  for key, value in values.items():
    parent = _walk(abs_state, key[:-1])
    parent[key[-1]] = parent[key[-1]].replace(value)
  return nnx.merge(graphdef, abs_state)
