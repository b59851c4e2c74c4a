"""Hugging Face checkpoints in and out (open one with `distil_jax.loading.open_model`)."""

from distil_jax.hf.export import save_pretrained
from distil_jax.hf.safetensors_io import CheckpointError

__all__ = ["save_pretrained", "CheckpointError"]
