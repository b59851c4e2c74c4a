"""The demo's report: one row per model of the run, scored on the held-out prompts, written as
results.json, results.md and results.png in the run directory."""

from __future__ import annotations

import dataclasses
import json
import os

from distil_jax.demo import results, world

ROWS = (
    ("teacher", "teacher"),
    ("student before training", "student_init"),
    ("after SFT", "sft"),
    ("after SFT, continued (equal tokens)", "sft_more"),
    ("after SFT + logit KD (online teacher)", "kd"),
    ("after SFT + logit KD (offline top-10)", "kd_offline"),
    ("after SFT + logit KD (chat log-probs, top-10)", "kd_chat"),
    ("after SFT + KD + fusion", "fusion"),
    ("after SFT + KD + DPO", "dpo"),
)


def report(demo) -> None:
  """results.json, results.md and results.png of a finished run (`demo`: tools/demo_method.Demo)."""

  s = demo.size
  heldout = world.read_jsonl(demo.path("world", "heldout.jsonl"))
  tokens = {
      "teacher": s.teacher_steps,
      "student_init": 0,
      "sft": s.sft_steps,
      "sft_more": s.sft_steps + s.distil_steps,
      "kd": s.sft_steps + s.distil_steps,
      "kd_offline": s.sft_steps + s.distil_steps,
      "kd_chat": s.sft_steps + s.distil_steps,
      "fusion": s.sft_steps + s.distil_steps,
      "dpo": s.sft_steps + 2 * s.distil_steps,
  }
  table = []
  for title, name in ROWS:
    table.append(
        {
            "name": title,
            "model": name,
            "train_tokens": tokens[name] * s.batch * s.seq_len,
            "scores": results.score_model(heldout, demo.path("eval", name + ".json")),
        }
    )
  md = results.markdown(table)
  md += (
      "\nrule accuracy: held-out prompts whose answer content is right; IFEval strict/loose: the "
      "formatting prompts whose every instruction passes; [ ] = 95% bootstrap interval over "
      f"the {len(heldout)} held-out prompts; train tokens = steps x batch x sequence (padded).\n"
  )
  runs = {
      name: demo.path("runs", name, "metrics.jsonl")
      for name in ("teacher", "sft", "sft_more", "kd", "kd_offline", "kd_chat", "fusion", "dpo")
  }
  results.plot(demo.path("results.png"), runs, table)
  for name, text in (
      ("results.md", md),
      (
          "results.json",
          json.dumps(
              {"table": table, "size": dataclasses.asdict(s), "stage_seconds": demo.timings},
              indent=1,
          ),
      ),
  ):
    with open(demo.path(name) + ".tmp", "w") as f:
      f.write(text)
    os.replace(demo.path(name) + ".tmp", demo.path(name))
  print("\n" + md)
  for row in table[:1] + table[-2:-1]:
    for ex in row.get("scores", {}).get("examples", [])[:2]:
      print(
          f"  {row['name']}: {ex['prompt']!r} -> {ex['answer']!r} (reference {ex['reference']!r})"
      )
  print(f"\nwritten: {demo.path('results.md')}, results.json, results.png")
