"""Chat messages -> token ids and an assistant mask, rendered turn by turn in token space.

Qwen's ChatML template renders every turn as `<|im_start|>{role}\\n{content}<|im_end|>` followed
by `\\n`. Each turn starts and ends with a special token, and the tokenizer never merges across
a special token, so tokenizing turns one at a time and concatenating gives exactly the ids of
tokenizing the whole rendered string (tests check this). That lets the mask be exact:

- assistant turn: 0 on `<|im_start|>assistant\\n`, 1 on the content and its closing `<|im_end|>`;
  if the content starts with a newline the tokenizer may merge it with the header's `\\n` into
  one token, which then counts as assistant (it carries assistant text);
- everything else (system, user, the `\\n` between turns): 0.

The default system prompt is read off the tokenizer's own template, and the hand rendering is
checked against `apply_chat_template` once per tokenizer, so a checkpoint with a different
template fails loudly instead of training on a silently different format.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_PROBE = "\x00probe\x00"


class ChatEncoder:
  """Encodes many conversations per tokenizer call; build once per tokenizer."""

  def __init__(self, tokenizer):
    self._backend = tokenizer.backend_tokenizer
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": _PROBE}], tokenize=False)
    user_turn = f"<|im_start|>user\n{_PROBE}<|im_end|>\n"
    if not rendered.endswith(user_turn):
      raise ValueError(
          "the tokenizer's chat template is not Qwen's ChatML format: " f"{rendered[:200]!r}"
      )
    self.default_system = rendered[: -len(user_turn)]  # "" if the template adds none
    probe = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "v"},
        {"role": "assistant", "content": "b"},
    ]
    for messages in (probe, probe[1:]):
      expected = tokenizer.apply_chat_template(messages, tokenize=False)
      if self.render(messages) != expected:
        raise ValueError(
            "the tokenizer's chat template renders turns differently from "
            f"ChatML: {expected[:300]!r}"
        )

  def render(self, messages: Sequence[dict[str, str]]) -> str:
    """The full chat-template string (what `apply_chat_template(tokenize=False)` gives)."""
    return "".join(text for text, _ in self._pieces(messages))

  def encode(
      self, conversations: Sequence[Sequence[dict[str, str]]]
  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Conversations -> `(ids int32 [n], assistant_mask uint8 [n])` each."""
    pieces = [self._pieces(messages) for messages in conversations]
    flat = [text for conv in pieces for text, _ in conv]
    encodings = self._backend.encode_batch(flat, add_special_tokens=False)
    out, k = [], 0
    for conv in pieces:
      ids, mask = [], []
      for text, header_chars in conv:
        enc = encodings[k]
        k += 1
        ids.extend(enc.ids)
        if header_chars is None:
          mask.extend([0] * len(enc.ids))
        else:  # trainable from the first token that ends past the header
          mask.extend(int(end > header_chars) for _, end in enc.offsets)
      out.append((np.asarray(ids, np.int32), np.asarray(mask, np.uint8)))
    return out

  def _pieces(self, messages: Sequence[dict[str, str]]) -> list[tuple[str, int | None]]:
    """(text, header length in chars if the text is trainable past it, else None)."""
    pieces: list[tuple[str, int | None]] = []
    if messages[0]["role"] != "system" and self.default_system:
      pieces.append((self.default_system, None))
    for m in messages:
      header = f"<|im_start|>{m['role']}\n"
      trainable = len(header) if m["role"] == "assistant" else None
      pieces.append((f"{header}{m['content']}<|im_end|>", trainable))
      pieces.append(("\n", None))
    return pieces
