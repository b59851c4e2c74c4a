"""`distil-jax generate` with bad inputs: checked before generating, one line naming the input line."""

import json
import os
import stat

import pytest

from distil_jax.cli import main

GOOD = {"messages": [{"role": "user", "content": "Hi"}]}
TOO_LONG = {
    "messages": [{"role": "user", "content": "word " * 600}]
}  # > the fixture's 512 positions


def write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def generate(model, src, out, *extra):
  return main(
      [
          "generate",
          "--model",
          model,
          "--input",
          src,
          "--output",
          str(out),
          "--max_new_tokens",
          "4",
          "--dtype",
          "float32",
          *extra,
      ]
  )


def test_an_overlong_prompt_fails_before_generating_naming_its_line(chat_hf_dir, tmp_path, capsys):
  src = write(tmp_path / "prompts.jsonl", [GOOD, GOOD, TOO_LONG, GOOD])
  assert generate(chat_hf_dir, src, tmp_path / "out.jsonl") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and f"{src}:3 (" in err[0] and "nothing generated" in err[0], err
  assert "generate: 1/" not in "".join(err) and not (tmp_path / "out.jsonl").exists()


def test_skip_overlong_answers_the_rest_with_the_umask_mode(chat_hf_dir, tmp_path, capsys):
  src = write(
      tmp_path / "prompts.jsonl", [{**GOOD, "id": 1}, {**TOO_LONG, "id": 2}, {**GOOD, "id": 3}]
  )
  old = os.umask(0o022)
  try:
    assert generate(chat_hf_dir, src, tmp_path / "out.jsonl", "--skip_overlong") == 0
  finally:
    os.umask(old)
  assert [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [
      1,
      3,
  ]
  assert stat.S_IMODE(os.stat(tmp_path / "out.jsonl").st_mode) == 0o644
  err = capsys.readouterr().err
  assert f"{src}:2" in err and "skipped 1 over-long prompt" in err


@pytest.mark.parametrize(
    "records, extra, message",
    [
        ([GOOD, {"messages": [{"role": "robot", "content": "x"}]}], [], ":2: unknown role 'robot'"),
        ([GOOD], ["--max_new_tokens", "-3"], "--max_new_tokens must be >= 1, got -3"),
        ([], [], "no prompts"),
    ],
)
def test_bad_arguments_are_refused_up_front_in_one_line(tmp_path, capsys, records, extra, message):
  src = write(tmp_path / "prompts.jsonl", records)
  # The model is never opened: a directory that does not exist proves it.
  assert generate(str(tmp_path / "no-model"), src, tmp_path / "out.jsonl", *extra) == 2
  err = capsys.readouterr().err
  assert (
      err.count("\n") == 1 and message in err and err.startswith("distil-jax generate: error: ")
  ), err


def test_a_missing_model_is_one_line(tmp_path, capsys):
  src = write(tmp_path / "prompts.jsonl", [GOOD])
  assert generate(str(tmp_path / "no-model"), src, tmp_path / "out.jsonl") == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "no-model" in err, err
