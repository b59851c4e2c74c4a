"""HF-like entry points: `from_pretrained` and `save_pretrained`."""
from __future__ import annotations

import jax

from distil_jax.hf.export import save_pretrained
from distil_jax.hf.load import from_pretrained as _from_hf
from distil_jax.sharding import DEFAULT_RULES, MeshConfig, Rules, make_mesh


def from_pretrained(path: str, *, mesh=None, rules: Rules = DEFAULT_RULES, dtype=None,
                    **config_overrides):
  """A HF Qwen2 directory, a distil-jax orbax model checkpoint, or a training run (its
  workdir, for the latest step, or one `checkpoints/<step>` directory) -> sharded `Qwen2`.

  `dtype` sets parameter and compute dtype together; other `ModelConfig` fields
  (attention_impl, remat_policy, compute_dtype, ...) may be overridden by keyword.
  """
  from distil_jax import checkpoints  # noqa: PLC0415 (orbax is heavy)
  from distil_jax.train.checkpoint import load_trained_model, train_run_step_dir  # noqa: PLC0415
  step_dir = train_run_step_dir(path)
  if step_dir or checkpoints.is_model_checkpoint(path):
    if dtype is not None:
      config_overrides.setdefault("param_dtype", dtype)
      config_overrides.setdefault("compute_dtype", dtype)
    mesh = mesh or make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    if step_dir:
      return load_trained_model(step_dir, mesh, rules, **config_overrides)
    return checkpoints.load_model(path, mesh, rules, **config_overrides)
  return _from_hf(path, mesh=mesh, rules=rules, dtype=dtype, **config_overrides)


__all__ = ["from_pretrained", "save_pretrained"]
