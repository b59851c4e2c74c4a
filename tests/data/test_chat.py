"""Chat formats normalise to messages; turn-by-turn ids equal the template's; the mask is exact."""

import numpy as np
import pytest

from distil_jax.data import formats
from distil_jax.data.chat import ChatEncoder

ODD_CHATS = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "  and 3+3?\n"},
        {"role": "assistant", "content": "6"},
    ],
    # content that starts with newlines/spaces can merge with the header's "\n"
    [
        {"role": "user", "content": "\n\ncode"},
        {"role": "assistant", "content": "\n\n  def f(): pass\n"},
    ],
    [
        {"role": "user", "content": "emoji 🙂 über"},
        {"role": "assistant", "content": " 世界 <|im_end|> x"},
    ],
    [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ],
]


@pytest.fixture(scope="module")
def encoder(tok):
  return ChatEncoder(tok)


def test_turn_by_turn_ids_equal_tokenizing_the_full_template(tok, encoder, make_chats):
  chats = ODD_CHATS + [r["messages"] for r in make_chats(40, seed=1)]
  for messages, (ids, mask) in zip(chats, encoder.encode(chats)):
    full = tok.apply_chat_template(messages, tokenize=False)
    assert encoder.render(messages) == full
    assert ids.tolist() == tok(full, add_special_tokens=False)["input_ids"]
    assert ids.dtype == np.int32 and mask.dtype == np.uint8 and mask.shape == ids.shape


def test_mask_covers_assistant_content_and_its_im_end_only(tok, encoder):
  messages = ODD_CHATS[1]
  ((ids, mask),) = encoder.encode([messages])
  trained = [tok.decode(ids[i:j]) for i, j in _runs(mask)]
  assert trained == ["4<|im_end|>", "6<|im_end|>"]
  header = tok("<|im_start|>assistant\n")["input_ids"]
  start = ids.tolist().index(header[1]) - 1
  assert mask[start : start + len(header)].tolist() == [0, 0, 0]  # the header is not trained


def test_a_newline_merged_into_the_header_counts_as_assistant(tok, encoder):
  ((ids, mask),) = encoder.encode([ODD_CHATS[2]])
  ((i, j),) = _runs(mask)
  assert tok.decode(ids[i:j]).endswith("  def f(): pass\n<|im_end|>")
  assert tok.decode(ids[:i]).endswith("<|im_start|>assistant")


def test_sharegpt_and_alpaca_normalise_to_messages():
  sharegpt = {
      "conversations": [
          {"from": "system", "value": "S"},
          {"from": "human", "value": "Q"},
          {"from": "gpt", "value": "A"},
      ]
  }
  assert formats.to_messages(sharegpt) == [
      {"role": "system", "content": "S"},
      {"role": "user", "content": "Q"},
      {"role": "assistant", "content": "A"},
  ]
  alpaca = {"instruction": "Translate", "input": "chat", "output": "cat"}
  assert formats.to_messages(alpaca) == [
      {"role": "user", "content": "Translate\n\nchat"},
      {"role": "assistant", "content": "cat"},
  ]
  parts = {
      "messages": [
          {
              "role": "user",
              "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
          },
          {"role": "assistant", "content": "c"},
      ]
  }
  assert formats.to_messages(parts)[0]["content"] == "ab"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"messages": [', formats.MALFORMED_JSON),
        (b"[1, 2]", formats.MALFORMED_JSON),
        (b'{"messages": [{"role": "user", "content": "\xff"}]}', formats.NON_UTF8),
        (b'{"text": "plain"}', formats.UNKNOWN_FORMAT),
        (
            b'{"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}',
            formats.MISSING_ROLE,
        ),
        (b'{"conversations": [{"value": "x"}]}', formats.MISSING_ROLE),
        (b'{"messages": [{"role": "tool", "content": "x"}]}', formats.UNSUPPORTED_ROLE),
        (
            b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}',
            formats.EMPTY_ASSISTANT,
        ),
        (b'{"messages": [{"role": "user", "content": "x"}]}', formats.NO_ASSISTANT),
        (
            b'{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}',
            formats.BAD_CONTENT,
        ),
    ],
)
def test_bad_records_are_named_by_reason(raw, reason):
  with pytest.raises(formats.BadExample) as e:
    formats.to_messages(formats.parse_line(raw))
  assert e.value.reason == reason


def test_example_id_is_the_source_id_else_a_content_hash():
  messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
  assert formats.example_id({"id": 7}, messages) == "7"
  hashed = formats.example_id({}, messages)
  assert hashed.startswith("sha256:") and hashed == formats.example_id({"lineage": "x"}, messages)
  assert hashed != formats.example_id({}, [*messages[:1], {"role": "assistant", "content": "b"}])


def _runs(mask):
  """[start, end) of each run of ones."""
  edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
  return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))
