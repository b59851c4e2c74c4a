"""Text in, text out: the tokenizer's chat template on the way in, stop tokens and detokenising on
the way out, over a `Generator`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from distil_jax.generate.engine import Completion, Generator
from distil_jax.generate.sampling import GREEDY, Sampling

# Qwen2.5 ends an assistant turn with <|im_end|>; base models end documents with <|endoftext|>.
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def stop_ids_for(tokenizer) -> tuple[int, ...]:
  """The tokenizer's EOS plus whichever of <|im_end|> / <|endoftext|> it knows."""
  ids = set()
  if tokenizer.eos_token_id is not None:
    ids.add(int(tokenizer.eos_token_id))
  vocab = tokenizer.get_vocab()
  ids.update(vocab[t] for t in STOP_TOKENS if t in vocab)
  return tuple(sorted(ids))


def encode_chat(tokenizer, messages: Sequence[Mapping]) -> list[int]:
  """Prompt ids for a conversation, ending with the assistant header the model continues from."""
  text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
  return encode_text(tokenizer, text)


def encode_text(tokenizer, text: str) -> list[int]:
  """Raw prompt ids: no BOS or other additions (the chat template already wrote every special)."""
  return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def decode(tokenizer, tokens: Sequence[int]) -> str:
  return tokenizer.decode(list(tokens), skip_special_tokens=True)


def chat(
    generator: Generator,
    tokenizer,
    conversations: Sequence[Sequence[Mapping]],
    *,
    max_new_tokens: int,
    sampling: Sampling = GREEDY,
    seed: int = 0,
) -> list[str]:
  """The assistant's reply to each conversation."""
  return [
      text
      for text, _ in chat_completions(
          generator,
          tokenizer,
          conversations,
          max_new_tokens=max_new_tokens,
          sampling=sampling,
          seed=seed,
      )
  ]


def chat_completions(
    generator: Generator,
    tokenizer,
    conversations,
    *,
    max_new_tokens: int,
    sampling: Sampling = GREEDY,
    seed: int = 0,
) -> list[tuple[str, Completion]]:
  """(reply text, token-level completion) for each conversation."""
  prompts = [encode_chat(tokenizer, messages) for messages in conversations]
  completions = generator.generate(
      prompts, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed
  )
  return [(decode(tokenizer, c.tokens), c) for c in completions]
