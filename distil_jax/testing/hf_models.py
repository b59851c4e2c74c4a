"""Random-init Qwen2 checkpoints built by `transformers` itself (PyTorch CPU), saved as HF dirs."""

from __future__ import annotations

import os


def make_hf_checkpoint(
    path: str,
    *,
    seed: int = 0,
    randomize_norms_and_biases: bool = True,
    dtype: str = "float32",
    max_shard_size: str | None = None,
    **config,
) -> str:
  """Save a random `Qwen2ForCausalLM` with `config` overrides to `path` and return it.

  Biases and norm scales are randomised too (HF initialises them to 0 and 1), so a
  mapping mistake in any of them shows up in the logits.
  """
  import torch  # noqa: PLC0415 (test-only dependency)
  from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: PLC0415

  base = dict(
      vocab_size=256,
      hidden_size=64,
      intermediate_size=128,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=2,
      max_position_embeddings=256,
      rope_theta=10000.0,
      tie_word_embeddings=False,
      bos_token_id=None,
      eos_token_id=None,
      pad_token_id=None,
  )
  base.update(config)
  torch.manual_seed(seed)
  model = Qwen2ForCausalLM(Qwen2Config(**base)).eval()
  if randomize_norms_and_biases:
    with torch.no_grad():
      for name, p in model.named_parameters():
        if name.endswith("bias"):
          p.normal_(0.0, 0.5)
        elif "norm" in name:
          p.uniform_(0.5, 1.5)
  model = model.to(getattr(torch, dtype))
  kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
  os.makedirs(path, exist_ok=True)
  model.save_pretrained(path, **kwargs)
  return path


def hf_logits(path: str, input_ids):
  """Reference logits from `transformers` for a [B, L] int array (float32 numpy)."""
  import numpy as np  # noqa: PLC0415
  import torch  # noqa: PLC0415
  from transformers import Qwen2ForCausalLM  # noqa: PLC0415

  model = Qwen2ForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
  with torch.no_grad():
    return model(torch.as_tensor(np.asarray(input_ids))).logits.float().numpy()
