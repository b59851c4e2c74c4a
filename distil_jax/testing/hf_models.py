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


def make_stopping_teacher(
    path: str, tokenizer, instructions, *, vocab_size: int, hidden_size: int = 32
) -> str:
  """A random float32 chat teacher (wide weights: well separated top-k) whose greedy answers stop.

  A random teacher practically never emits `<|im_end|>`. Here its LM-head row w is solved (least
  squares on the final-normed hidden states of the greedy trajectories) so that the answer to most
  `instructions` (as `distil-jax serve` renders a single user turn) stops after 2 to 4 tokens:
  `<w, h>` is 8 above the best other logit at that step and 8 below before it. An instruction
  whose conditions contradict the ones already taken (a repeated state) is left free. Saves the
  checkpoint and `tokenizer` to `path` and returns it.
  """
  import numpy as np  # noqa: PLC0415
  import torch  # noqa: PLC0415
  from transformers import Qwen2ForCausalLM  # noqa: PLC0415

  from distil_jax.generate.chat import encode_text  # noqa: PLC0415

  make_hf_checkpoint(
      path,
      vocab_size=vocab_size,
      hidden_size=hidden_size,
      intermediate_size=2 * hidden_size,
      num_attention_heads=4,
      num_key_value_heads=2,
      initializer_range=1.0,
      max_position_embeddings=256,
  )
  model = Qwen2ForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
  end = tokenizer.convert_tokens_to_ids("<|im_end|>")
  rows, targets = np.zeros((0, hidden_size)), np.zeros(0)
  with torch.no_grad():
    for p, instruction in enumerate(instructions):
      text = tokenizer.apply_chat_template(
          [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
      )
      ids = encode_text(tokenizer, text)
      states, best = [], []
      for _ in range(5):  # the greedy answer without <|im_end|>
        out = model(torch.tensor([ids]), output_hidden_states=True)
        h, logits = out.hidden_states[-1][0, -1].double(), out.logits[0, -1].double()
        np.testing.assert_allclose(  # the last hidden state is the final-normed one
            (model.lm_head.weight.double() @ h)[:100].numpy(), logits[:100].numpy(), atol=1e-4
        )
        logits[end] = -np.inf
        states.append(h.numpy())
        best.append(float(logits.max()))
        ids.append(int(logits.argmax()))
      for stop_at in (2 + p % 3, 2, 3, 4):
        r = np.concatenate([rows, np.stack(states[: stop_at + 1])])
        t = np.concatenate([targets, np.asarray(best[:stop_at]) - 8.0, [best[stop_at] + 8.0]])
        w = np.linalg.lstsq(r, t, rcond=None)[0]
        if np.abs(r @ w - t).max() < 1e-6:
          rows, targets = r, t
          break
    w = np.linalg.lstsq(rows, targets, rcond=None)[0]
    model.lm_head.weight[end] = torch.as_tensor(w, dtype=torch.float32)
  model.save_pretrained(path)
  tokenizer.save_pretrained(path)
  return path
