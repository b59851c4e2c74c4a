"""Tiny random Qwen2 checkpoints built by transformers, loaded here in float32."""

import jax.numpy as jnp
import pytest

import distil_jax
from distil_jax.testing.hf_models import make_hf_checkpoint

# A wide init keeps greedy output from collapsing into one repeated token, so parity is a real test.
TINY = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    initializer_range=0.3,
)


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
  return make_hf_checkpoint(str(tmp_path_factory.mktemp("tiny") / "hf"), **TINY)


@pytest.fixture(scope="session")
def tiny_model(tiny_hf_dir):
  return distil_jax.from_pretrained(tiny_hf_dir, dtype=jnp.float32)


# The real Qwen2.5 vocabulary (151,936 rows) on a toy body, with the offline tokenizer saved beside it.
CHAT = dict(
    vocab_size=151936,
    hidden_size=64,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    max_position_embeddings=512,
    initializer_range=0.3,
)


@pytest.fixture(scope="session")
def chat_hf_dir(tmp_path_factory):
  from distil_jax.tokenizer import load_tokenizer

  path = make_hf_checkpoint(str(tmp_path_factory.mktemp("chat") / "hf"), **CHAT)
  load_tokenizer().save_pretrained(path)
  return path
