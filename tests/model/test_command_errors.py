"""convert, export and serve end expected failures with one line naming the path, exit 2."""

import json
import os
import shutil

import pytest

from distil_jax.cli import main
from distil_jax.testing.hf_models import make_hf_checkpoint


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return make_hf_checkpoint(str(tmp_path_factory.mktemp("cmd") / "hf"))


def _one_line(capsys, command, *needles):
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith(f"distil-jax {command}: error: "), err
  for needle in needles:
    assert needle in err, err


@pytest.mark.parametrize(
    "command, argv",
    [
        ("convert", ["--hf", "{missing}", "--output", "{out}"]),
        ("export", ["--checkpoint", "{missing}", "--output", "{out}"]),
        ("serve", ["--model", "{missing}", "--port", "0"]),
    ],
)
def test_a_missing_checkpoint_is_one_line(tmp_path, capsys, command, argv):
  paths = {"missing": str(tmp_path / "nope"), "out": str(tmp_path / "out")}
  assert main([command, *[a.format(**paths) for a in argv]]) == 2
  _one_line(capsys, command, paths["missing"])


def test_an_unsupported_config_is_one_line_naming_the_key(hf_dir, tmp_path, capsys):
  path = str(tmp_path / "sliding")
  shutil.copytree(hf_dir, path)
  cfg = json.load(open(os.path.join(path, "config.json")))
  cfg.update(
      use_sliding_window=True, sliding_window=8, layer_types=["full_attention", "sliding_attention"]
  )
  json.dump(cfg, open(os.path.join(path, "config.json"), "w"))
  assert main(["convert", "--hf", path, "--output", str(tmp_path / "out")]) == 2
  _one_line(capsys, "convert", "config.json", "use_sliding_window")


def test_export_over_an_existing_directory_is_one_line(hf_dir, tmp_path, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  assert main(["export", "--checkpoint", hf_dir, "--output", str(out)]) == 2
  _one_line(capsys, "export", str(out), "overwrite")
  assert (out / "keep.txt").read_text() == "mine"


def _dead_pid():
  import subprocess
  import sys

  return int(
      subprocess.run(
          [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
      ).stdout
  )


@pytest.mark.parametrize("command", ["convert", "export"])
def test_a_killed_runs_temporary_directory_is_removed_by_the_next_run(hf_dir, tmp_path, command):
  out = tmp_path / "out"
  abandoned = tmp_path / f"out.tmp-{_dead_pid()}-0123abcd"
  live = tmp_path / f"out.tmp-{os.getpid()}-4567ef01"  # a writer still running: left alone
  for d in (abandoned, live):
    (d / "part").mkdir(parents=True)
  flag = "--hf" if command == "convert" else "--checkpoint"
  assert main([command, flag, hf_dir, "--output", str(out)]) == 0
  assert not abandoned.exists() and live.exists() and out.is_dir()
