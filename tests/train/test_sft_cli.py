"""Done-means of the training core: `distil-jax prepare` + `distil-jax train` run SFT on the
tiny config from chat JSONL, and the student comes out as a HF checkpoint transformers loads."""

import json

import numpy as np

from distil_jax import cli


def _chat_jsonl(path, n=16):
  with open(path, "w") as f:
    for i in range(n):
      f.write(
          json.dumps(
              {
                  "messages": [
                      {"role": "user", "content": f"What is {i} plus {i}?"},
                      {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
                  ]
              }
          )
          + "\n"
      )


def test_prepare_train_resume_and_export_from_chat_jsonl(tmp_path):
  _chat_jsonl(tmp_path / "chat.jsonl")
  assert (
      cli.main(
          ["prepare", "--input", str(tmp_path / "chat.jsonl"), "--output", str(tmp_path / "shards")]
      )
      == 0
  )
  args = [
      "train",
      "--config",
      "configs/sft/tiny.py",
      "--workdir",
      str(tmp_path / "run"),
      f"--config.data.path={tmp_path / 'shards'}",
      "--config.data.seq_len=64",
      "--config.checkpoint.every_steps=2",
      "--config.optim.warmup_steps=1",
      "--config.log_every=1",
      "--no_progress",
  ]
  assert cli.main(args + ["--config.steps=2"]) == 0
  assert cli.main(args + ["--config.steps=4", "--export", str(tmp_path / "hf")]) == 0  # resumes

  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert all(r["tokens"] > 0 and np.isfinite(r["loss"]) for r in rows)  # assistant tokens
  assert rows[-1]["loss"] < rows[0]["loss"]
  assert (
      cli.main(
          [
              "train",
              "--config",
              "configs/sft/tiny.py",
              "--workdir",
              str(tmp_path / "x"),
              "--config.optim.lrr=1",
          ]
      )
      == 2
  )  # a typo'd override is an error

  import torch
  import transformers

  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
  with torch.no_grad():
    logits = model(torch.tensor([[9707, 1879]])).logits
  assert logits.shape == (1, 2, 151936) and np.isfinite(logits.numpy()).all()
