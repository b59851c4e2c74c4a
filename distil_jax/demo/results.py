"""The demo's results table: one row per model, rule-checked and IFEval-style scores on the held-out
prompts with bootstrap intervals, written as JSON, Markdown and a PNG with every stage's loss curve.
Perplexity = exp(sum of the held-out answers' token NLLs / their token count); its interval
resamples the examples (`perplexity_interval`).

Rule accuracy = mean over held-out prompts of `world.is_correct(row, answer)`; strict / loose = the
fraction of prompts whose every instruction passes (`distil_jax.eval`'s prompt-level scores, here
over the formatting prompts only, the ones that carry an instruction). The interval is the 2.5th
and 97.5th percentile of the metric over `n_boot` resamples of the prompts with replacement.
"""

from __future__ import annotations

import json
import os

import numpy as np

from distil_jax.demo import world

METRICS = ("accuracy", "strict", "loose", "perplexity", "words")


def _bootstrap(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
  if values.size == 0:
    return float("nan"), float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  means = values[rng.integers(0, values.size, (n_boot, values.size))].mean(axis=1)
  return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def perplexity_interval(ppl: dict, n_boot: int, seed: int) -> tuple[float, float, float]:
  """exp(sum nll / sum tokens) and its 95% interval over resampled examples (each example's
  sums from `distil-jax eval --data`'s `per_example`); no interval without them."""
  if ppl.get("perplexity") is None:
    return (float("nan"),) * 3
  rows = np.asarray(ppl.get("per_example") or [], float)
  if rows.size == 0:
    return float(ppl["perplexity"]), float("nan"), float("nan")
  rng = np.random.default_rng(seed)
  pick = rng.integers(0, len(rows), (n_boot, len(rows)))
  boot = np.exp(rows[pick, 0].sum(1) / np.maximum(rows[pick, 1].sum(1), 1))
  return (
      float(ppl["perplexity"]),
      float(np.percentile(boot, 2.5)),
      float(np.percentile(boot, 97.5)),
  )


def score_model(heldout: list[dict], eval_json: str, n_boot: int = 1000, seed: int = 0) -> dict:
  """Scores of one `distil-jax eval` run (its JSON and the per-prompt answers beside it)."""
  with open(eval_json) as f:
    result = json.load(f)
  answers = {}
  with open(eval_json + ".ifeval.jsonl") as f:
    for line in f:
      r = json.loads(line)
      answers[r["key"]] = r
  missing = [h["key"] for h in heldout if h["key"] not in answers]
  if missing:
    raise ValueError(
        f"{eval_json}.ifeval.jsonl: no answer for {len(missing)} prompts, e.g. {missing[0]}"
    )
  rows = [answers[h["key"]] for h in heldout]
  correct = np.array([world.is_correct(h, r["response"]) for h, r in zip(heldout, rows)], float)
  fmt = [(r["strict"], r["loose"]) for h, r in zip(heldout, rows) if h["instruction_id_list"]]
  strict = np.array([all(s) for s, _ in fmt], float)
  loose = np.array([all(lo) for _, lo in fmt], float)
  words = np.array([len(r["response"].split()) for r in rows], float)
  out = {
      "accuracy": _bootstrap(correct, n_boot, seed),
      "strict": _bootstrap(strict, n_boot, seed),
      "loose": _bootstrap(loose, n_boot, seed),
      "words": _bootstrap(words, n_boot, seed),
  }
  out["perplexity"] = perplexity_interval(result.get("perplexity", {}), n_boot, seed)
  out["num_prompts"] = len(rows)
  out["num_format_prompts"] = len(fmt)
  out["examples"] = [
      {"prompt": h["prompt"], "reference": h["content"], "answer": r["response"]}
      for h, r in list(zip(heldout, rows))[:3]
  ]
  return out


def _cell(v: tuple, pct: bool) -> str:
  m, lo, hi = v
  if np.isnan(m):
    return "n/a"
  if pct:
    return f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
  return f"{m:.2f}" if np.isnan(lo) else f"{m:.2f} [{lo:.2f}, {hi:.2f}]"


def markdown(table: list[dict]) -> str:
  lines = [
      "| model | train tokens | rule accuracy % | IFEval strict % | IFEval loose % | perplexity | answer words |",
      "|---|---|---|---|---|---|---|",
  ]
  for r in table:
    if r.get("skipped"):
      lines.append(f"| {r['name']} | - | not run: {r['skipped']} | | | | |")
      continue
    s = r["scores"]
    lines.append(
        f"| {r['name']} | {r.get('train_tokens', '-')} | {_cell(s['accuracy'], True)} | "
        f"{_cell(s['strict'], True)} | {_cell(s['loose'], True)} | "
        f"{_cell(s['perplexity'], False)} | {_cell(s['words'], False)} |"
    )
  return "\n".join(lines) + "\n"


def _loss_curve(metrics_path: str) -> tuple[list[int], list[float]]:
  steps, losses = [], []
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      rows = [json.loads(line) for line in f]
    for row in rows:
      if "loss" in row and "step" in row:
        steps.append(int(row["step"]))
        losses.append(float(row["loss"]))
  return steps, losses


def _compact(v: tuple) -> str:
  """A perplexity cell short enough for the PNG: 3 significant digits (76294 -> 7.63e+04)."""
  m, lo, hi = v
  if np.isnan(m):
    return "n/a"
  f = lambda x: f"{x:.3g}"
  return f(m) if np.isnan(lo) else f"{f(m)} [{f(lo)}, {f(hi)}]"


def plot(path: str, runs: dict[str, str], table: list[dict]) -> None:
  """Loss curves of every training run (name -> metrics.jsonl) beside the table, one PNG."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax, tab) = plt.subplots(2, 1, figsize=(11, 8.5), gridspec_kw={"height_ratios": [3, 2]})
  offset = {}
  for name, metrics in runs.items():
    steps, losses = _loss_curve(metrics)
    if steps:
      ax.plot(steps, losses, marker=".", label=name)
      offset[name] = steps[-1]
  ax.set_xlabel("step of the stage")
  ax.set_ylabel("training objective (per response token)")
  ax.set_yscale("log")
  ax.legend(fontsize=8)
  ax.set_title("distil-jax demo: loss of every stage")
  tab.axis("off")
  cols = ["model", "rule acc %", "strict %", "loose %", "ppl", "words"]
  cells = []
  for r in table:
    if r.get("skipped"):
      cells.append([r["name"], "not run", "", "", "", ""])
      continue
    s = r["scores"]
    cells.append(
        [
            r["name"],
            _cell(s["accuracy"], True),
            _cell(s["strict"], True),
            _cell(s["loose"], True),
            _compact(s["perplexity"]),
            f"{s['words'][0]:.1f}",
        ]
    )
  widths = [0.3, 0.14, 0.14, 0.14, 0.2, 0.08]
  t = tab.table(cellText=cells, colLabels=cols, loc="center", colWidths=widths)
  t.auto_set_font_size(False)
  t.set_fontsize(7.5)
  t.scale(1, 1.3)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)
