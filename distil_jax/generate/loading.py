"""A model and its tokenizer from a checkpoint directory, for the generate and serve commands."""
from __future__ import annotations

from pathlib import Path


def load_model(path: str | Path, *, dtype=None):
    """A HF directory or a distil-jax orbax model checkpoint (see `distil_jax.loading.open_model`)."""
    from distil_jax.loading import open_model

    return open_model(str(path), dtype=dtype)


def load_tokenizer_for(path: str | Path):
    """The checkpoint's own tokenizer when it ships one, else the offline Qwen2.5 tokenizer."""
    from distil_jax.tokenizer import load_tokenizer

    path = Path(path)
    return load_tokenizer(path if (path / "tokenizer.json").is_file() else None)
