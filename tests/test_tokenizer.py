"""The offline Qwen2.5 tokenizer matches the published one: ids, special tokens, chat format."""

import json

import pytest

from distil_jax import tokenizer as tokenizer_lib

# Qwen2.5-Instruct's own rendering of a two-turn chat (default system prompt).
TWO_TURN = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "6."},
]
TWO_TURN_TEXT = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\n4.<|im_end|>\n"
    "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
    "<|im_start|>assistant\n6.<|im_end|>\n"
)
# Ids of the default system block, as Qwen2.5's tokenizer.json produces them.
SYSTEM_BLOCK_IDS = [
    151644,
    8948,
    198,
    2610,
    525,
    1207,
    16948,
    11,
    3465,
    553,
    54364,
    14817,
    13,
    1446,
    525,
    264,
    10950,
    17847,
    13,
    151645,
    198,
]


@pytest.fixture(scope="module")
def tok():
  return tokenizer_lib.load_tokenizer()


def test_known_ids(tok):
  assert tok("Hello world")["input_ids"] == [9707, 1879]
  assert tok("<|im_start|>user\n")["input_ids"] == [151644, 872, 198]
  assert tok("<|im_start|>assistant\n")["input_ids"] == [151644, 77091, 198]
  assert tok("12345")["input_ids"] == [16, 17, 18, 19, 20]  # Qwen splits digits one by one


def test_special_tokens_sit_at_their_real_ids(tok):
  assert len(tok) == 151665
  for i, (token, _) in enumerate(tokenizer_lib.ADDED_TOKENS):
    assert tok.convert_tokens_to_ids(token) == 151643 + i, token
  assert tok.convert_tokens_to_ids("<|file_sep|>") == 151664
  assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 151645)
  assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 151643)


def test_chat_template_renders_the_qwen2p5_format(tok):
  assert tok.apply_chat_template(TWO_TURN, tokenize=False) == TWO_TURN_TEXT
  prompt = tok.apply_chat_template(TWO_TURN[:1], tokenize=False, add_generation_prompt=True)
  assert prompt.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
  own_system = [{"role": "system", "content": "Be brief."}, *TWO_TURN[:2]]
  assert tok.apply_chat_template(own_system, tokenize=False).startswith(
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
  )
  assert tok(TWO_TURN_TEXT)["input_ids"][: len(SYSTEM_BLOCK_IDS)] == SYSTEM_BLOCK_IDS


def test_decode_round_trips(tok):
  text = "héllo  世界\n\n\tcode(x) = 42; <|im_end|> naïve ünïcode 🙂"
  assert tok.decode(tok(text)["input_ids"]) == text
  assert tok.decode(tok("a<|im_end|>b")["input_ids"], skip_special_tokens=True) == "ab"


def test_save_pretrained_reloads_identically(tok, tmp_path):
  tok.save_pretrained(tmp_path / "hf")
  again = tokenizer_lib.load_tokenizer(tmp_path / "hf")
  assert again.chat_template == tok.chat_template
  assert again.apply_chat_template(TWO_TURN, tokenize=False) == TWO_TURN_TEXT
  assert again("Hello world <|im_start|>")["input_ids"] == [9707, 1879, 220, 151644]
  assert tokenizer_lib.tokenizer_fingerprint(again) == tokenizer_lib.tokenizer_fingerprint(tok)
  config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
  assert config["eos_token"] == "<|im_end|>"
  assert config["tokenizer_class"] == "Qwen2Tokenizer"  # what real Qwen2.5 checkpoints name


def test_bpe_settings_match_qwen2p5_tokenizer_json(tok):
  model = json.loads(tok.backend_tokenizer.to_str())["model"]
  assert {k: model[k] for k in ("type", "ignore_merges", "byte_fallback", "fuse_unk")} == {
      "type": "BPE",
      "ignore_merges": False,
      "byte_fallback": False,
      "fuse_unk": False,
  }
  assert len(model["vocab"]) == tokenizer_lib.NUM_BPE_RANKS


def test_missing_tokenizer_json_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    tokenizer_lib.load_tokenizer(tmp_path)


def test_build_is_cached_on_disk_and_reused(tmp_path, monkeypatch):
  monkeypatch.setenv("DISTIL_JAX_CACHE", str(tmp_path))
  first = tokenizer_lib.load_tokenizer()
  entries = list((tmp_path / "tokenizers").iterdir())
  assert [e.name for e in entries] == [tokenizer_lib.offline_tokenizer_id()]  # no temp dirs left

  def must_not_rebuild():
    raise AssertionError("rebuilt although the cache holds the tokenizer")

  monkeypatch.setattr(tokenizer_lib, "build_offline_tokenizer", must_not_rebuild)
  second = tokenizer_lib.load_tokenizer()
  assert second("Hello world")["input_ids"] == first("Hello world")["input_ids"] == [9707, 1879]
