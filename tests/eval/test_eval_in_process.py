"""`distil-jax eval --model`: answers from the framework's greedy generation, scored, written, compared;
held-out perplexity equal to transformers' on the same checkpoint."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distil_jax
from distil_jax.cli import main
from distil_jax.commands.eval import default_prompts
from distil_jax.eval.ifeval import read_prompts, score_one
from distil_jax.generate import Generator, chat, stop_ids_for
from distil_jax.tokenizer import load_tokenizer

CONVERSATIONS = [
    [
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "Seven is prime."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "Four."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "Six, which is even."},
    ],
    [{"role": "user", "content": "说一句中文。"}, {"role": "assistant", "content": "你好，世界！"}],
]


@pytest.fixture(scope="module")
def shards(eval_hf_dir, tmp_path_factory):
  from distil_jax.data import prepare_dataset

  root = tmp_path_factory.mktemp("ppl")
  src = root / "chat.jsonl"
  src.write_text(
      "".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in CONVERSATIONS)
  )
  prepare_dataset([str(src)], str(root / "shards"), tokenizer=eval_hf_dir, shard_size=2)
  return str(root / "shards")


@pytest.fixture(scope="module")
def reference(eval_hf_dir, shards):
  return _transformers_perplexity(eval_hf_dir, shards)


def _transformers_perplexity(hf_dir, data_dir):
  """exp(mean naive cross-entropy) of transformers' logits, float64, over the shards' marked tokens."""
  import torch
  from transformers import Qwen2ForCausalLM
  from distil_jax.eval.perplexity import read_documents

  hf = Qwen2ForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
  total, count = 0.0, 0.0
  for ids, targets, mask in read_documents(data_dir, 512):
    with torch.no_grad():
      logits = hf(torch.as_tensor(ids[None])).logits[0].double().numpy()
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    nll = -logp[np.arange(len(ids)), targets]
    total += float((nll * mask).sum())
    count += float(mask.sum())
  return math.exp(total / count), count


def test_in_process_eval_answers_scores_and_writes(
    eval_hf_dir, shards, reference, tmp_path, capsys
):
  out = tmp_path / "runs" / "tiny.json"
  assert (
      main(
          [
              "eval",
              "--model",
              eval_hf_dir,
              "--limit",
              "5",
              "--max_new_tokens",
              "6",
              "--batch_size",
              "8",
              "--data",
              shards,
              "--seq_len",
              "512",
              "--ppl_batch_size",
              "2",
              "--loss_chunk",
              "16",
              "--speed",
              "--speed_batches",
              "2",
              "--speed_prompt_len",
              "8",
              "--speed_new_tokens",
              "4",
              "--speed_repeats",
              "1",
              "--dtype",
              "float32",
              "--output",
              str(out),
              "--no_progress",
              "--name",
              "tiny",
          ]
      )
      == 0
  )
  result = json.loads(out.read_text())
  # Speed: both engines measured in the same run at each batch size (figures, not asserted bounds).
  assert [r["batch"] for r in result["speed"]] == [2]
  assert all(
      r[e]["end_to_end_tok_s"] > 0 for r in result["speed"] for e in ("ours", "transformers")
  )
  assert "speed.batch2.transformers_tok_s" in result["metrics"]
  # Held-out perplexity: every example once, equal to transformers' exp(mean cross-entropy).
  assert result["perplexity"]["examples"] == 3 and result["perplexity"]["tokens"] == reference[1]
  assert result["metrics"]["perplexity.perplexity"] == pytest.approx(reference[0], rel=2e-5)
  assert result["perplexity"]["loss"] == pytest.approx(math.log(reference[0]), rel=2e-5)
  assert result["format"] == "distil-jax-eval/1" and result["source"]["kind"] == "model"
  rows = [json.loads(l) for l in open(result["ifeval"]["answers_file"], encoding="utf-8")]
  prompts = read_prompts(default_prompts())[:5]
  assert [r["key"] for r in rows] == [p.key for p in prompts]

  # The answers are the framework's own greedy chat replies, prompt for prompt.
  tokenizer = load_tokenizer(eval_hf_dir)
  model = distil_jax.from_pretrained(eval_hf_dir, dtype=jnp.float32)
  expected = chat(
      Generator(model, stop_ids=stop_ids_for(tokenizer)),
      tokenizer,
      [[{"role": "user", "content": p.prompt}] for p in prompts],
      max_new_tokens=6,
  )
  assert [r["response"] for r in rows] == expected
  for row, prompt in zip(rows, prompts):
    assert {k: row[k] for k in ("strict", "loose")} == {
        k: v for k, v in score_one(prompt, row["response"]).items() if k in ("strict", "loose")
    }
  strict = sum(all(r["strict"]) for r in rows) / 5
  assert result["ifeval"]["prompt_level_strict_acc"] == pytest.approx(strict)
  assert result["metrics"]["ifeval.prompt_level_strict_acc"] == pytest.approx(strict)
  assert "ifeval.prompt_level_strict_acc" in capsys.readouterr().out
  assert sorted(os.listdir(out.parent)) == ["tiny.json", "tiny.json.ifeval.jsonl"]  # no temporaries

  # Side by side with a second (doctored) run: a table and a PNG chart.
  other = dict(result, name="other")
  other["ifeval"] = dict(result["ifeval"], prompt_level_strict_acc=0.5)
  other["metrics"] = dict(result["metrics"], **{"ifeval.prompt_level_strict_acc": 0.5})
  (tmp_path / "other.json").write_text(json.dumps(other))
  chart = tmp_path / "cmp.png"
  assert (
      main(["eval", "--compare", str(out), str(tmp_path / "other.json"), "--chart", str(chart)])
      == 0
  )
  printed = capsys.readouterr().out
  line = next(l for l in printed.splitlines() if l.startswith("ifeval.prompt_level_strict_acc"))
  assert line.split()[1:] == [f"{strict:.4f}", "0.5000"]
  assert "per instruction type" in printed
  assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_is_one_line_and_exit_2(eval_hf_dir, tmp_path, capsys):
  assert (
      main(
          [
              "eval",
              "--model",
              eval_hf_dir,
              "--prompts",
              str(tmp_path / "nope.jsonl"),
              "--output",
              str(tmp_path / "r.json"),
          ]
      )
      == 2
  )
  assert f"--prompts {tmp_path / 'nope.jsonl'}: no such file" in capsys.readouterr().err
  bad = tmp_path / "bad.json"
  bad.write_text("{}")
  assert main(["eval", "--compare", str(bad)]) == 2
  assert f"{bad}: not a distil-jax eval result" in capsys.readouterr().err


def test_perplexity_on_a_mesh_equals_transformers(eval_hf_dir, shards, reference):
  from distil_jax.eval.perplexity import evaluate_loss
  from distil_jax.sharding import MeshConfig, make_mesh

  mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2), devices=jax.devices()[:8])
  sharded = distil_jax.from_pretrained(eval_hf_dir, dtype=jnp.float32, mesh=mesh)
  on_mesh = evaluate_loss(
      sharded, shards, seq_len=512, batch_size=4, chunk=16, mesh=mesh, progress=False
  )
  assert on_mesh["perplexity"] == pytest.approx(reference[0], rel=2e-5)
  assert on_mesh["tokens"] == reference[1] and on_mesh["examples"] == 3
  # each example's own sums (for intervals) add up to the totals
  rows = np.asarray(on_mesh["per_example"], np.float64)
  assert rows.shape == (3, 2) and rows[:, 1].sum() == reference[1]
  assert np.exp(rows[:, 0].sum() / rows[:, 1].sum()) == pytest.approx(reference[0], rel=2e-5)
