"""EleutherAI's lm-evaluation-harness with `distil-jax serve` as its backend: `local-completions`
scores a multiple-choice task from prompt log-probs (echo), equal to transformers' own, and
`local-chat-completions` runs a generation task. Needs the `eval` extra (lm_eval)."""

import json

import numpy as np
import pytest

from distil_jax.testing.hf_models import hf_logits

lm_eval = pytest.importorskip("lm_eval")

QUESTIONS = [
    {"question": "The sky on a clear day is", "choices": [" blue", " green", " loud"], "answer": 0},
    {"question": "Two plus two equals", "choices": [" four", " five"], "answer": 0},
    {
        "question": "Water freezes at zero degrees",
        "choices": [" Celsius", " Fahrenheit"],
        "answer": 0,
    },
]
TASKS = {
    "tiny_mc": {
        "output_type": "multiple_choice",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": "acc"}],
    },
    "tiny_gen": {
        "output_type": "generate_until",
        "doc_to_target": " blue",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 6},
        "metric_list": [{"metric": "exact_match"}],
    },
}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("lm_eval_tasks")
  data = root / "questions.jsonl"
  data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
  for name, spec in TASKS.items():
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "doc_to_text": "{{question}}",
        **spec,
    }
    (root / f"{name}.yaml").write_text(json.dumps(config))  # JSON is YAML
  return root


def _evaluate(model, model_args, task, task_dir, **kw):
  from lm_eval import simple_evaluate
  from lm_eval.tasks import TaskManager

  return simple_evaluate(
      model=model,
      model_args=model_args,
      tasks=[task],
      task_manager=TaskManager(include_path=str(task_dir)),
      log_samples=True,
      **kw,
  )


@pytest.mark.slow
def test_local_completions_loglikelihoods_equal_transformers(
    server, checkpoint, tokenizer, task_dir, tmp_path, monkeypatch
):
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  tokenizer.save_pretrained(tmp_path / "tok")
  args = (
      f"model=tiny,base_url={server.url}/completions,tokenizer_backend=huggingface,"
      f"tokenizer={tmp_path / 'tok'},num_concurrent=2,max_retries=1,tokenized_requests=True"
  )
  out = _evaluate("local-completions", args, "tiny_mc", task_dir)
  assert 0.0 <= out["results"]["tiny_mc"]["acc,none"] <= 1.0
  samples = out["samples"]["tiny_mc"]
  assert len(samples) == len(QUESTIONS)
  pairs = [(a[0], a[1], r[0][0]) for s in samples for a, r in zip(s["arguments"], s["resps"])]
  rows = []  # lm-eval's own split: context ids, then the rest of the whole text's ids
  for context, continuation, _ in pairs:
    context_ids = tokenizer.encode(context)
    rows.append((context_ids, tokenizer.encode(context + continuation)[len(context_ids) :]))
  width = max(len(c) + len(r) for c, r in rows)
  padded = np.array([c + r + [0] * (width - len(c) - len(r)) for c, r in rows])
  logp = hf_logits(checkpoint, padded).astype(np.float64)  # right padding: causal, harmless
  logp -= logp.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  for i, ((context_ids, rest), (_, _, got)) in enumerate(zip(rows, pairs)):
    ids = context_ids + rest
    expected = sum(logp[i, t - 1, ids[t]] for t in range(len(context_ids), len(ids)))
    assert got == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow
def test_local_chat_completions_runs_a_generation_task(server, task_dir, monkeypatch):
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  args = f"model=tiny,base_url={server.url}/chat/completions,num_concurrent=2,max_retries=1"
  out = _evaluate("local-chat-completions", args, "tiny_gen", task_dir, apply_chat_template=True)
  assert 0.0 <= out["results"]["tiny_gen"]["exact_match,none"] <= 1.0
  samples = out["samples"]["tiny_gen"]
  assert len(samples) == len(QUESTIONS) and all(isinstance(s["resps"][0][0], str) for s in samples)
