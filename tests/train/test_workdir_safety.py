"""`distil-jax train` checks its inputs before touching the workdir, holds a lock on it, and falls
back past an unreadable checkpoint. One short real run is shared by every test (module fixture)."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from distil_jax import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """shards/ of 16 short chats."""
  root = tmp_path_factory.mktemp("safety")
  with open(root / "chat.jsonl", "w") as f:
    for i in range(16):
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
  assert (
      cli.main(["prepare", "--input", str(root / "chat.jsonl"), "--output", str(root / "shards")])
      == 0
  )
  return root


@pytest.fixture(scope="module")
def trained(prepared):
  """shards/ and run/ with checkpoints at steps 1 and 2."""
  assert cli.main(_args(prepared / "run", prepared / "shards", 2)) == 0
  return prepared


def _args(workdir, data, steps, *extra):
  return [
      "train",
      "--config",
      os.path.join(REPO, "configs/sft/tiny.py"),
      "--workdir",
      str(workdir),
      f"--config.data.path={data}",
      "--config.data.seq_len=64",
      "--config.checkpoint.every_steps=1",
      "--config.optim.warmup_steps=1",
      f"--config.steps={steps}",
      "--no_progress",
      *extra,
  ]


def _copy(trained, name):
  shutil.copytree(trained / "run", trained / name)
  return trained / name


def _snapshot(workdir):
  return {p: (workdir / p).read_bytes() for p in ("config.json", "model_config.json")}


def test_an_incompatible_resume_changes_nothing_and_says_why_in_one_line(trained, capsys):
  run = _copy(trained, "mismatch")
  before = _snapshot(run)
  assert cli.main(_args(run, trained / "shards", 3, "--config.model.vocab_size=1000")) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "vocab_size 151936 -> 1000" in err and str(run) in err, err
  assert _snapshot(run) == before  # the good checkpoints can still be exported


def test_a_missing_data_path_is_reported_before_the_workdir_exists(prepared, tmp_path, capsys):
  assert cli.main(_args(tmp_path / "new", tmp_path / "no-data", 1)) == 2
  assert "no-data" in capsys.readouterr().err and not (tmp_path / "new").exists()


@pytest.mark.parametrize("make_target", ["existing", "under_a_file"])
def test_an_unusable_export_dir_is_refused_before_training(prepared, tmp_path, capsys, make_target):
  (tmp_path / "existing").mkdir()
  (tmp_path / "a_file").write_text("x")
  target = tmp_path / "existing" if make_target == "existing" else tmp_path / "a_file" / "hf"
  assert cli.main(_args(tmp_path / "new", prepared / "shards", 1, "--export", str(target))) == 2
  assert f"--export {target}" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_lock_refuses_a_second_run_and_is_taken_over_after_kill_9_past_an_unreadable_checkpoint(
    trained, capsys
):
  run = _copy(trained, "locked")
  holder = subprocess.Popen(
      [
          sys.executable,
          "-c",
          "import sys, time; from distil_jax.train.workdir import WorkdirLock\n"
          f"WorkdirLock({str(run)!r}).__enter__(); print('locked', flush=True); time.sleep(600)",
      ],
      stdout=subprocess.PIPE,
      text=True,
      env={**os.environ, "PYTHONPATH": REPO},
  )
  try:
    assert holder.stdout.readline().strip() == "locked"
    assert cli.main(_args(run, trained / "shards", 3)) == 2
    err = capsys.readouterr().err
    assert "is in use by another `distil-jax train` (pid" in err and str(holder.pid) in err, err
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The holder died without unlocking; the latest checkpoint is corrupt; a kill -9 mid-save left a
  # temporary directory; and the data now comes through a worker process.
  state = run / "checkpoints" / "2" / "state"
  biggest = max((p for p in state.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  os.truncate(biggest, 100)
  (run / "checkpoints" / "3.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
  assert cli.main(_args(run, trained / "shards", 3, "--config.data.worker_count=1")) == 0
  err = capsys.readouterr().err
  assert f"taking over the workdir lock of a process that is gone (pid {holder.pid}" in err, err
  assert (
      f"checkpoint {run}/checkpoints/2 is unreadable" in err and "resuming from step 1" in err
  ), err
  assert "Traceback" not in err and "Event loop is closed" not in err, err
  names = sorted(os.listdir(run / "checkpoints"))
  assert "unreadable-2" in names and "3" in names and not any("tmp" in n for n in names), names


def test_a_corrupt_shard_stops_every_process_with_a_line_naming_the_file(prepared, tmp_path):
  import portpicker

  data = tmp_path / "shards"
  shutil.copytree(prepared / "shards", data)
  shard = next(data.glob("*.array_record"))
  raw = bytearray(shard.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  shard.write_bytes(bytes(raw))
  port = portpicker.pick_unused_port()
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              "-m",
              "distil_jax.cli",
              *_args(tmp_path / "run", data, 2)[:-1],
              "--coordinator",
              f"127.0.0.1:{port}",
              "--num_processes",
              "2",
              "--process_id",
              str(i),
          ],
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  try:
    errs = [p.communicate(timeout=120)[1] for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [1, 1], errs
  line = f"failed: ShardError: {shard}: sha256 differs from the manifest's"
  assert all(line in err for err in errs), errs
  assert not (tmp_path / "run").exists()
