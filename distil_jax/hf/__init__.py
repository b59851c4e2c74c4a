"""Hugging Face checkpoints in and out."""
from distil_jax.hf.api import from_pretrained, save_pretrained
from distil_jax.hf.safetensors_io import CheckpointError

__all__ = ["from_pretrained", "save_pretrained", "CheckpointError"]
