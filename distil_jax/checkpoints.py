"""Model weights as orbax checkpoints: `model_config.json` beside an orbax `params` item.

This is what `distil-jax convert` writes and what training can start from. Restores go
straight into the target mesh's shardings, so the checkpoint's mesh does not matter.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import jax
import orbax.checkpoint as ocp
from flax import nnx

from distil_jax import temporaries
from distil_jax.model import ModelConfig, Qwen2, abstract_model
from distil_jax.model.config import dtype_name, parse_dtype, AttentionImpl, RematPolicy
from distil_jax.model.rope_scaling import YarnScaling
from distil_jax.sharding import DEFAULT_RULES, Rules, state_shardings, sync_processes

CONFIG_FILE = "model_config.json"


def config_to_json(cfg: ModelConfig) -> dict:
  out = dataclasses.asdict(cfg)
  out["param_dtype"], out["compute_dtype"] = dtype_name(cfg.param_dtype), dtype_name(
      cfg.compute_dtype
  )
  out["attention_impl"], out["remat_policy"] = cfg.attention_impl.value, cfg.remat_policy.value
  return out


def config_from_json(d: dict, **overrides) -> ModelConfig:
  d = dict(d)
  d["param_dtype"], d["compute_dtype"] = parse_dtype(d["param_dtype"]), parse_dtype(
      d["compute_dtype"]
  )
  d["attention_impl"], d["remat_policy"] = AttentionImpl(d["attention_impl"]), RematPolicy(
      d["remat_policy"]
  )
  if d.get("rope_scaling"):
    d["rope_scaling"] = YarnScaling(**d["rope_scaling"])
  d.update(overrides)
  return ModelConfig(**d)


def is_model_checkpoint(path: str) -> bool:
  return os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isdir(
      os.path.join(path, "params")
  )


def read_config(path: str, **overrides) -> ModelConfig:
  with open(os.path.join(path, CONFIG_FILE)) as f:
    return config_from_json(json.load(f), **overrides)


def save_model(model: Qwen2, path: str, *, overwrite: bool = False) -> str:
  """Write the weights and config of `model` under `path` (temp dir, then rename)."""
  path = os.path.abspath(path)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
  if jax.process_index() == 0:
    temporaries.remove_abandoned(path)  # left by a killed convert
  tmp = multihost_broadcast_str(temporaries.temporary_name(path))
  # Bound device->host staging so saving never holds a second copy of the model.
  handler = ocp.PyTreeCheckpointHandler(save_device_host_concurrent_gb=0.25)
  with ocp.Checkpointer(handler) as ckptr:
    ckptr.save(
        os.path.join(tmp, "params"),
        args=ocp.args.PyTreeSave(nnx.state(model, nnx.Param).to_pure_dict()),
    )
  if jax.process_index() == 0:
    with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
      json.dump(config_to_json(model.cfg), f, indent=2)
    if os.path.exists(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  sync_processes(f"save_model:{path}")  # nobody reads `path` before process 0 renamed it
  return path


def load_model(path: str, mesh, rules: Rules = DEFAULT_RULES, **config_overrides) -> Qwen2:
  """Restore a `save_model` checkpoint onto `mesh` (any mesh)."""
  cfg = read_config(path, **config_overrides)
  graphdef, abs_state = nnx.split(abstract_model(cfg))
  shardings = state_shardings(abs_state, mesh, rules)
  target = jax.tree.map(
      lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s.get_value()),
      abs_state,
      shardings,
      is_leaf=lambda x: isinstance(x, nnx.Variable),
  )
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as ckptr:
    restored = ckptr.restore(
        os.path.join(path, "params"),
        args=ocp.args.PyTreeRestore(
            target.to_pure_dict(),
            restore_args=ocp.checkpoint_utils.construct_restore_args(target.to_pure_dict()),
        ),
    )
  nnx.replace_by_pure_dict(abs_state, restored)
  return nnx.merge(graphdef, abs_state)


def multihost_broadcast_str(value: str) -> str:
  """Every process uses process 0's choice (e.g. a random temp-dir name)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  raw = np.frombuffer(value.encode().ljust(256), np.uint8)
  return bytes(multihost_utils.broadcast_one_to_all(raw)).decode().strip()
