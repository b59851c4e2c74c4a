"""`distil-jax generate`: chat JSONL in, the same records plus the model's answer out."""

import json

import jax.numpy as jnp

import distil_jax
from distil_jax.cli import main
from distil_jax.generate import Generator, chat, stop_ids_for
from distil_jax.tokenizer import load_tokenizer

RECORDS = [
    {"id": "a", "messages": [{"role": "user", "content": "Name a prime number."}]},
    {
        "id": "b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is distillation, in one line?"},
            {"role": "assistant", "content": "A teacher's answer to drop."},
        ],
        "lineage": {"source": "seed"},
    },
    {"id": "c", "messages": [{"role": "user", "content": "Hi"}]},
]


def test_generate_command_answers_every_record_in_order(chat_hf_dir, tmp_path):
  src, out = tmp_path / "prompts.jsonl", tmp_path / "out" / "answers.jsonl"
  src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
  assert (
      main(
          [
              "generate",
              "--model",
              chat_hf_dir,
              "--input",
              str(src),
              "--output",
              str(out),
              "--max_new_tokens",
              "8",
              "--batch_size",
              "2",
              "--dtype",
              "float32",
          ]
      )
      == 0
  )
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["id"] for r in lines] == ["a", "b", "c"]
  for record, original in zip(lines, RECORDS):
    assert {k: v for k, v in record.items() if k in original} == original
    assert isinstance(record["completion"], str)
    assert record["finish_reason"] in ("stop", "length")
    assert 0 < record["completion_tokens"] <= 8 or record["finish_reason"] == "stop"
  assert list(out.parent.iterdir()) == [out]  # no temporary left behind

  # Greedy answers are the chat helper's, prompt for prompt (the assistant turn was dropped).
  tokenizer = load_tokenizer(chat_hf_dir)
  model = distil_jax.from_pretrained(chat_hf_dir, dtype=jnp.float32)
  prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in RECORDS]
  expected = chat(
      Generator(model, stop_ids=stop_ids_for(tokenizer)), tokenizer, prompts, max_new_tokens=8
  )
  assert [r["completion"] for r in lines] == expected


def test_stop_ids_are_the_qwen_turn_and_document_ends():
  assert set(stop_ids_for(load_tokenizer())) == {151643, 151645}
