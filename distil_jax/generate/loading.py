"""A model, its tokenizer and its sampling defaults from a checkpoint directory, for the generate
and serve commands."""

from __future__ import annotations

import json
from pathlib import Path

from distil_jax.generate.sampling import Sampling

# What an OpenAI client gets when neither the request nor the checkpoint says otherwise.
OPENAI_DEFAULTS = Sampling(temperature=1.0)


def checkpoint_dtype(path: str | Path):
  """The dtype a HF directory's config.json declares (`torch_dtype`), or None."""
  from distil_jax.model.config import parse_dtype

  config = Path(path) / "config.json"
  if not config.is_file():
    return None
  hf = json.loads(config.read_text())
  name = hf.get("torch_dtype") or hf.get("dtype")
  try:
    return parse_dtype(name) if isinstance(name, str) else None
  except ValueError:
    return None


def load_model(path: str | Path, *, dtype=None):
  """Anything `distil_jax.loading.open_model` opens. Without `dtype`, a HF directory computes
  in the dtype its config.json declares."""
  from distil_jax.loading import open_model

  return open_model(str(path), dtype=dtype if dtype is not None else checkpoint_dtype(path))


def load_tokenizer_for(path: str | Path):
  """The checkpoint's own tokenizer when it ships one, else the offline Qwen2.5 tokenizer."""
  from distil_jax.tokenizer import load_tokenizer

  path = Path(path)
  return load_tokenizer(path if (path / "tokenizer.json").is_file() else None)


def generation_defaults(path: str | Path, fallback: Sampling = OPENAI_DEFAULTS) -> Sampling:
  """Sampling defaults from the checkpoint's generation_config.json, field by field (temperature,
  top_p, top_k, repetition_penalty; `do_sample: false` means greedy), else `fallback`'s."""
  file = Path(path) / "generation_config.json"
  if not file.is_file():
    return fallback
  try:
    g = json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{file}: invalid JSON: {e}") from None
  pick = lambda name, kind: kind(g[name]) if g.get(name) is not None else getattr(fallback, name)
  temperature = pick("temperature", float) if g.get("do_sample", True) else 0.0
  try:
    return Sampling(
        temperature=temperature,
        top_k=pick("top_k", int),
        top_p=pick("top_p", float),
        repetition_penalty=pick("repetition_penalty", float),
    )
  except ValueError as e:
    raise ValueError(f"{file}: {e}") from None
