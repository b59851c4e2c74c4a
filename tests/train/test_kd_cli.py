"""Done-means of distillation on the command line: `distil-jax train` with the fusion config
distils a tiny student from a teacher with another vocabulary size, resumes bit-exactly after
kill -9, refuses a teacher with another tokenizer, and exports a plain Qwen2.5 checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from distil_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEACHER = dict(
    hidden_size=96,
    intermediate_size=192,
    num_hidden_layers=4,
    num_attention_heads=6,
    num_key_value_heads=2,
    max_position_embeddings=512,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  from distil_jax.testing.hf_models import make_hf_checkpoint
  from distil_jax.tokenizer import load_tokenizer

  root = tmp_path_factory.mktemp("kdcli")
  with open(root / "chat.jsonl", "w") as f:
    for i in range(24):
      f.write(
          json.dumps(
              {
                  "messages": [
                      {"role": "user", "content": f"Count from {i} to {i + 5}."},
                      {"role": "assistant", "content": " ".join(str(j) for j in range(i, i + 6))},
                  ]
              }
          )
          + "\n"
      )
  assert (
      cli.main(["prepare", "--input", str(root / "chat.jsonl"), "--output", str(root / "data")])
      == 0
  )
  tokenizer = load_tokenizer()
  teacher = str(root / "teacher")  # 152,064 rows like Qwen2.5-7B; the student has 151,936
  make_hf_checkpoint(teacher, seed=5, vocab_size=152064, tie_word_embeddings=False, **TEACHER)
  tokenizer.save_pretrained(teacher)
  return root, teacher


def _args(root, teacher, workdir, steps):
  return [
      "train",
      "--config",
      "configs/fusion/tiny.py",
      "--workdir",
      str(workdir),
      f"--config.data.path={root / 'data'}",
      f"--config.frozen.teacher.path={teacher}",
      "--config.data.seq_len=64",
      "--config.data.batch_size=8",
      f"--config.steps={steps}",
      "--config.checkpoint.every_steps=1",
      "--config.optim.warmup_steps=1",
      "--config.log_every=1",
      "--config.loss.fusion_enter_fraction=0.25",
      "--no_progress",
  ]


def _params(workdir):
  from flax import nnx
  from distil_jax.loading import open_model

  return [np.asarray(x) for x in __import__("jax").tree.leaves(nnx.state(open_model(str(workdir))))]


@pytest.mark.slow
def test_fusion_run_resumes_bit_exactly_after_kill_9_and_exports_plain_qwen2(setup, tmp_path):
  root, teacher = setup
  straight = tmp_path / "straight"
  assert cli.main(_args(root, teacher, straight, 4)) == 0
  rows = [json.loads(line) for line in open(straight / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert all(r["kd"] > 0 and r["fusion"] > 0 and np.isfinite(r["loss"]) for r in rows)

  # kill -9 as soon as step 2 is on disk, then run the same command again.
  killed = tmp_path / "killed"
  import jax

  env = dict(
      os.environ,
      PYTHONPATH=ROOT,  # compiled programs come from this session's cache
      JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
  )
  proc = subprocess.Popen(
      [sys.executable, "-m", "distil_jax.cli", *_args(root, teacher, killed, 4)],
      cwd=ROOT,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 300
  try:
    while time.time() < deadline and proc.poll() is None:
      if (killed / "checkpoints" / "2").is_dir():
        proc.send_signal(signal.SIGKILL)
        break
      time.sleep(0.01)
  finally:
    proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
  assert cli.main(_args(root, teacher, killed, 4)) == 0
  for a, b in zip(_params(killed), _params(straight)):
    np.testing.assert_array_equal(a, b)

  # The projections never leave the run: export writes exactly a Qwen2 checkpoint.
  out = tmp_path / "hf"
  assert cli.main(["export", "--checkpoint", str(straight), "--output", str(out)]) == 0
  from safetensors import safe_open

  names = []
  for shard in out.glob("*.safetensors"):
    with safe_open(str(shard), "np") as f:
      names += list(f.keys())
  assert names
  assert not [n for n in names if "proj" in n and "_proj" not in n]
  assert all(n.startswith(("model.", "lm_head.")) for n in names)
  import jax.numpy as jnp
  from distil_jax.loading import open_model
  from distil_jax.testing.hf_models import hf_logits

  ids = np.array([[9707, 1879, 11, 220, 16, 17]], np.int32)
  ours = np.asarray(open_model(str(straight), dtype=jnp.float32)(jnp.asarray(ids)))
  np.testing.assert_allclose(hf_logits(str(out), ids), ours, atol=2e-5, rtol=1e-4)


def test_a_teacher_with_another_tokenizer_is_refused_naming_both(setup, tmp_path, capsys):
  root, teacher = setup
  import shutil

  other = tmp_path / "other_teacher"
  shutil.copytree(teacher, other)
  cfg = json.loads((other / "tokenizer_config.json").read_text())
  cfg["chat_template"] = "{{ messages[0]['content'] }}"
  (other / "tokenizer_config.json").write_text(json.dumps(cfg))
  (other / "chat_template.jinja").unlink(missing_ok=True)
  assert cli.main(_args(root, str(other), tmp_path / "run", 1)) == 2
  err = capsys.readouterr().err
  assert str(other) in err and str(root / "data") in err and "tokenizer" in err
