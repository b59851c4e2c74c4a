"""A toy-bodied Qwen2 with the real Qwen2.5 vocabulary and tokenizer, shared by the pair tests."""

import jax.numpy as jnp
import pytest

from distil_jax.loading import open_model
from distil_jax.testing.hf_models import make_hf_checkpoint

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
def student_dir(tmp_path_factory):
  from distil_jax.tokenizer import load_tokenizer

  path = make_hf_checkpoint(str(tmp_path_factory.mktemp("student") / "hf"), **CHAT)
  load_tokenizer().save_pretrained(path)
  return path


@pytest.fixture(scope="session")
def student(student_dir):
  """(model, tokenizer) loaded once."""
  from distil_jax.tokenizer import load_tokenizer

  return open_model(student_dir, dtype=jnp.float32), load_tokenizer(student_dir)
