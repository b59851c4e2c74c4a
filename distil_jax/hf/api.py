"""The HF-facing entry point out: `save_pretrained` (in: `distil_jax.loading.open_model`)."""

from __future__ import annotations

from distil_jax.hf.export import save_pretrained

__all__ = ["save_pretrained"]
