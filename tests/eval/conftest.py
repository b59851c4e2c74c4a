"""A tiny random Qwen2 checkpoint with the real Qwen2.5 vocabulary and tokenizer, and a scripted
OpenAI-compatible server on loopback, shared by the evaluation tests."""

import pytest

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
def eval_hf_dir(tmp_path_factory):
  from distil_jax.tokenizer import load_tokenizer

  path = make_hf_checkpoint(str(tmp_path_factory.mktemp("eval-chat") / "hf"), **CHAT)
  load_tokenizer().save_pretrained(path)
  return path


@pytest.fixture()
def scripted_server():
  """The curation tests' fault server: scripted answers, a third of requests failing first."""
  from distil_jax.curate.testing.fault_server import FaultPlan, FaultServer

  server = FaultServer(
      delay_s=0.0, faults=FaultPlan(fault_rate=0.3, slow_s=0.5, retry_after_s=0.01)
  )
  url = server.start_in_thread()
  yield server, url
  server.stop()
