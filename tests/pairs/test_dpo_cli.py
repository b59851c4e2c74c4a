"""make-pairs -> prepare-pairs -> ref-logprobs -> train (DPO) -> export, from the command line,
and a second `train` run resuming where the first stopped."""

import json
import os

import pytest

from distil_jax.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHATS = [
    {
        "id": f"c{i}",
        "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
    }
    for i, (q, a) in enumerate(
        [
            ("Name a prime.", "Seven is a prime number."),
            ("Capital of France?", "Paris."),
            ("2 + 2?", "Four: 2 + 2 = 4."),
            ("Say hello.", "Hello! How can I help you today?"),
            ("Largest planet?", "Jupiter."),
            ("Colour of the sky?", "Blue."),
            ("3 x 3?", "Nine."),
            ("Opposite of hot?", "Cold."),
        ]
    )
]


@pytest.mark.slow  # ~60 s of CPU: the 151,936-way LM head over 16 rows, generation, three models
def test_the_dpo_pipeline_runs_from_the_command_line_and_resumes(tmp_path, student_dir, capsys):
  src = tmp_path / "chats.jsonl"
  src.write_text("".join(json.dumps(c) + "\n" for c in CHATS))
  assert (
      main(
          [
              "make-pairs",
              "--student",
              student_dir,
              "--input",
              str(src),
              "--output",
              str(tmp_path / "pairs"),
              "--max_new_tokens",
              "8",
              "--dtype",
              "float32",
          ]
      )
      == 0
  )
  assert (
      main(
          [
              "prepare-pairs",
              "--input",
              str(tmp_path / "pairs"),
              "--output",
              str(tmp_path / "tok"),
              "--tokenizer",
              student_dir,
              "--max_length",
              "64",
          ]
      )
      == 0
  )
  assert (
      main(
          [
              "ref-logprobs",
              "--model",
              student_dir,
              "--pairs",
              str(tmp_path / "tok"),
              "--output",
              str(tmp_path / "ref"),
              "--batch_size",
              "2",
              "--dtype",
              "float32",
          ]
      )
      == 0
  )
  train = [
      "train",
      "--config",
      os.path.join(REPO, "configs/dpo/tiny.py") + ":" + student_dir,
      "--workdir",
      str(tmp_path / "run"),
      "--no_progress",
      f"--config.data.path={tmp_path / 'tok'}",
      f"--config.loss.reference_logprobs={tmp_path / 'ref'}",
      "--config.data.batch_size=8",
      "--config.data.seq_len=64",
      "--config.checkpoint.every_steps=1",
      "--config.checkpoint.async_save=False",
      "--config.log_every=1",
  ]
  capsys.readouterr()
  assert main([*train, "--config.steps=2"]) == 0
  first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert first["step"] == 2 and 0.0 <= first["reward_accuracy"] <= 1.0 and first["pairs"] == 8
  assert (
      main(
          [*train, "--config.steps=3", "--export", str(tmp_path / "hf"), "--tokenizer", student_dir]
      )
      == 0
  )
  second = json.loads(capsys.readouterr().out.strip().splitlines()[-2])
  assert second["step"] == 3
  logged = [
      json.loads(line)["step"]
      for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  ]
  assert logged == [1, 2, 3]  # the second run took one step, from the saved step 2
  assert (tmp_path / "hf" / "config.json").is_file() and (
      tmp_path / "hf" / "tokenizer.json"
  ).is_file()
  # The student starts as the reference: step 1's loss is log 2, precomputed or online.
  online = [a for a in train if not a.startswith(("--workdir", str(tmp_path / "run")))]
  assert (
      main(
          [
              *online,
              "--workdir",
              str(tmp_path / "online"),
              "--config.steps=1",
              "--config.loss.online_reference=True",
          ]
      )
      == 0
  )
  for run in ("run", "online"):
    step1 = json.loads((tmp_path / run / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(step1["loss"] - 0.6931472) < 1e-5, (run, step1["loss"])
