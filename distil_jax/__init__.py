"""distil-jax: distil large Qwen2.5 teachers into small, fast students in JAX/Flax NNX.

The top level imports nothing heavy: `distil_jax.curate` must run where JAX is not
installed, so the JAX-backed API is resolved lazily on first attribute access.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "from_pretrained": "distil_jax.loading",
    "open_model": "distil_jax.loading",
    "save_pretrained": "distil_jax.hf.export",
    "ModelConfig": "distil_jax.model.config",
    "Qwen2": "distil_jax.model.qwen2",
}


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'distil_jax' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
