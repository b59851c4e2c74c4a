"""The demos' export check: transformers reloads an exported HF directory and must give our logits."""

from __future__ import annotations


def logits_difference(hf_dir: str, prompt: str) -> float:
  """max |logits(distil-jax) - logits(transformers)| in float32 on one chat-templated prompt."""
  import jax.numpy as jnp
  import numpy as np

  import distil_jax
  from distil_jax.testing.hf_models import hf_logits
  from distil_jax.tokenizer import load_tokenizer

  tok = load_tokenizer(hf_dir)
  text = tok.apply_chat_template(
      [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
  )
  ids = np.asarray([tok(text)["input_ids"]])
  ours = np.asarray(distil_jax.from_pretrained(hf_dir, dtype=jnp.float32)(jnp.asarray(ids)))
  return float(np.abs(ours - hf_logits(hf_dir, ids)).max())
