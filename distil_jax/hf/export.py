"""Write a model as a HF Qwen2 directory that `transformers` loads.

Tensors are gathered and written one at a time into safetensors shards of bounded size,
with `model.safetensors.index.json`, `config.json`, `generation_config.json` and the
tokenizer. Everything goes to a temporary sibling directory that is renamed into place
only when complete, so a crash never leaves something that looks like a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
from jax.experimental import multihost_utils

from distil_jax import temporaries
from distil_jax.hf.mapping import entries, our_path
from distil_jax.hf.safetensors_io import write_safetensors
from distil_jax.model import Qwen2
from distil_jax.sharding import sync_processes

MAX_SHARD_BYTES = 5 * 1000**3  # the Hub's 5 GB default


def _param(model: Qwen2, path: tuple[str, ...]) -> jax.Array:
  node = model
  for name in path:
    node = getattr(node, name)
  return node[...]


def _to_host(array: jax.Array) -> np.ndarray:
  if array.is_fully_addressable:
    return np.asarray(jax.device_get(array))
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def _plan_shards(specs, max_shard_bytes):
  shards, current, size = [], [], 0
  for spec in specs:
    nbytes = np.dtype(spec[2]).itemsize * int(np.prod(spec[1]))
    if current and size + nbytes > max_shard_bytes:
      shards.append(current)
      current, size = [], 0
    current.append(spec)
    size += nbytes
  if current:
    shards.append(current)
  return shards


def _generation_config(tokenizer, hf_cfg) -> dict:
  eos = [hf_cfg["eos_token_id"]] if hf_cfg["eos_token_id"] is not None else []
  pad = hf_cfg["bos_token_id"]
  if tokenizer is not None:
    eos = (
        sorted(
            {
                tokenizer.convert_tokens_to_ids(t)
                for t in ("<|im_end|>", "<|endoftext|>")
                if t in tokenizer.get_vocab()
            }
        )
        or eos
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else pad
  return {
      "bos_token_id": hf_cfg["bos_token_id"],
      "eos_token_id": eos,
      "pad_token_id": pad,
      "do_sample": True,
      "temperature": 0.7,
      "top_p": 0.8,
      "top_k": 20,
      "repetition_penalty": 1.05,
  }


def default_tokenizer_for(model: Qwen2):
  """The real Qwen2.5 tokenizer when the vocabulary can hold it, else None."""
  from distil_jax.tokenizer import load_tokenizer  # noqa: PLC0415 (heavy, optional)

  tok = load_tokenizer()
  return tok if len(tok) <= model.cfg.vocab_size else None


def save_pretrained(
    model: Qwen2,
    path: str,
    tokenizer=None,
    *,
    dtype=None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    overwrite: bool = False,
) -> str:
  """Write `model` as a HF directory at `path`. `tokenizer=None` writes the Qwen2.5 tokenizer
  when it fits the vocabulary; pass `False` to write none. Returns `path`."""
  path = os.path.abspath(path)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
  if tokenizer is None:
    tokenizer = default_tokenizer_for(model)
  cfg = model.cfg
  out_dtype = np.dtype(dtype or cfg.param_dtype)
  special = {"bos_token_id": 151643, "eos_token_id": 151645}
  if tokenizer:
    special = {
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
    }
  special = {k: (v if v is not None and v < cfg.vocab_size else None) for k, v in special.items()}
  hf_cfg = cfg.to_hf(**special)
  hf_cfg["torch_dtype"] = out_dtype.name
  plan = []
  for e in entries(cfg):
    full = _param(model, our_path(e.rule))
    layer_shape = full.shape[1:] if e.layer is not None else full.shape
    plan.append((e.name, e.rule.hf_shape(tuple(layer_shape)), out_dtype, e))
  shards = _plan_shards(plan, max_shard_bytes)

  def tensors(shard):
    for _, _, _, e in shard:
      full = _param(model, our_path(e.rule))
      value = full[e.layer] if e.layer is not None else full
      yield e.rule.to_hf(_to_host(value)).astype(out_dtype)

  writer = jax.process_index() == 0
  tmp = temporaries.temporary_name(path)
  if writer:
    temporaries.remove_abandoned(path)  # left by a killed export
    os.makedirs(tmp)
  try:
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
      fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
      specs = [(name, shape, dt) for name, shape, dt, _ in shard]
      if writer:
        write_safetensors(os.path.join(tmp, fname), specs, tensors(shard))
      else:
        for _ in tensors(shard):  # every process takes part in the gathers
          pass
      for name, shape, dt in specs:
        weight_map[name] = fname
        total += dt.itemsize * int(np.prod(shape))
    if writer:
      _write_json(
          os.path.join(tmp, "model.safetensors.index.json"),
          {"metadata": {"total_size": total}, "weight_map": weight_map},
      )
      _write_json(os.path.join(tmp, "config.json"), hf_cfg)
      _write_json(
          os.path.join(tmp, "generation_config.json"), _generation_config(tokenizer or None, hf_cfg)
      )
      if tokenizer:
        tokenizer.save_pretrained(tmp)
      if os.path.exists(path):
        shutil.rmtree(path)
      os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  sync_processes(f"save_pretrained:{path}")
  return path


def _write_json(path: str, obj) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
