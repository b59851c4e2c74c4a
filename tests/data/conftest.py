"""Shared fixtures: the offline tokenizer (loaded once) and a prepared corpus on disk."""

import json
import random

import pytest

from distil_jax.data.prepare import prepare_dataset
from distil_jax.tokenizer import load_tokenizer

WORDS = (
    "the cat sat on a mat while distillation of large models into small ones runs fast "
    "über naïve 世界 code(x) = 42; print('hi') 123 456"
).split()


@pytest.fixture(scope="session")
def tok():
  return load_tokenizer()


def synthetic_conversations(n: int, seed: int = 0) -> list[dict]:
  """Varied OpenAI-format chats: 1-3 exchanges, optional system prompt, 2-60 words a turn."""
  rng = random.Random(seed)
  records = []
  for i in range(n):
    messages = [{"role": "system", "content": "Be brief."}] if rng.random() < 0.3 else []
    for _ in range(rng.randint(1, 3)):
      for role in ("user", "assistant"):
        messages.append(
            {"role": role, "content": " ".join(rng.choices(WORDS, k=rng.randint(2, 60)))}
        )
    records.append({"id": f"ex-{i:04d}", "messages": messages})
  return records


def write_jsonl(path, records) -> None:
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


@pytest.fixture(scope="session")
def make_chats():
  """`make_chats(n, seed=0)` -> synthetic OpenAI-format records."""
  return synthetic_conversations


@pytest.fixture(scope="session")
def jsonl_writer():
  """`jsonl_writer(path, records)` writes one JSON object a line."""
  return write_jsonl


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory, tok):
  """240 chats in 4 shards, max_length 256 (a few are truncated)."""
  root = tmp_path_factory.mktemp("corpus")
  write_jsonl(root / "chats.jsonl", synthetic_conversations(240))
  prepare_dataset(
      [root / "chats.jsonl"], root / "prepared", tokenizer=tok, max_length=256, shard_size=64
  )
  return root / "prepared"
