"""A running server over a toy model with the real Qwen2.5 vocabulary and tokenizer."""

import jax.numpy as jnp
import pytest

import distil_jax
from distil_jax.serve import ServeConfig, start_server
from distil_jax.testing.hf_models import make_hf_checkpoint
from distil_jax.tokenizer import load_tokenizer

CHAT = dict(
    vocab_size=151936,
    hidden_size=64,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    max_position_embeddings=256,
    initializer_range=0.3,
)


@pytest.fixture(scope="session")
def tokenizer():
  return load_tokenizer()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
  """A float32 HF checkpoint directory (no generation_config.json)."""
  return make_hf_checkpoint(str(tmp_path_factory.mktemp("serve") / "hf"), **CHAT)


@pytest.fixture(scope="session")
def server(checkpoint, tokenizer):
  model = distil_jax.from_pretrained(checkpoint, dtype=jnp.float32)
  # A generous wait so that requests fired together are certain to share a batch.
  config = ServeConfig(
      served_model_names=("tiny",),
      strict_model_name=True,
      default_max_tokens=8,
      max_batch=8,
      max_wait_s=0.3,
      read_timeout_s=1.0,
      idle_timeout_s=2.0,
  )
  handle = start_server(model, tokenizer, port=0, config=config)
  yield handle
  handle.stop()


@pytest.fixture(scope="session")
def continuous(checkpoint, tokenizer):
  """The same model under continuous batching (4 slots)."""
  model = distil_jax.from_pretrained(checkpoint, dtype=jnp.float32)
  config = ServeConfig(served_model_names=("tiny",), max_batch=4, continuous=True)
  with start_server(model, tokenizer, port=0, config=config) as handle:
    yield handle
