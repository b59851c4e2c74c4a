"""An evaluation's JSON (written atomically), its readable table, and side-by-side comparisons.

A result file holds `metrics`: a flat {name: number} view of every headline figure (the keys
`compare` lines up), next to the full sections (`ifeval`, `perplexity`, `mt_bench`, `alpaca_eval`,
`speed`). See docs/eval.md for the schema.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

FORMAT = "distil-jax-eval/1"
HEADLINE = (
    (
        "ifeval",
        (
            "prompt_level_strict_acc",
            "prompt_level_loose_acc",
            "inst_level_strict_acc",
            "inst_level_loose_acc",
            "mean_response_words",
            "mean_response_chars",
        ),
    ),
    ("perplexity", ("loss", "perplexity", "token_accuracy")),
    ("mt_bench", ("score",)),
    ("alpaca_eval", ("win_rate", "lc_win_rate")),
)


def flat_metrics(result: dict) -> dict[str, float]:
  metrics = {}
  for section, keys in HEADLINE:
    for key in keys:
      value = (result.get(section) or {}).get(key)
      if isinstance(value, (int, float)):
        metrics[f"{section}.{key}"] = float(value)
  for row in result.get("speed") or []:
    for engine in ("ours", "transformers"):
      if engine in row:
        metrics[f"speed.batch{row['batch']}.{engine}_tok_s"] = row[engine]["end_to_end_tok_s"]
  return metrics


def write_atomic(path: str, text: str) -> None:
  target = Path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, target)
  except BaseException:
    os.unlink(tmp)
    raise


def write_result(path: str, result: dict) -> None:
  result = {"format": FORMAT, **result, "metrics": flat_metrics(result)}
  write_atomic(path, json.dumps(result, indent=1, ensure_ascii=False) + "\n")


def read_result(path: str) -> dict:
  try:
    result = json.loads(Path(path).read_text(encoding="utf-8"))
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: cannot read an evaluation result ({e})") from None
  if not isinstance(result, dict) or result.get("format") != FORMAT:
    raise ValueError(
        f"{path}: not a distil-jax eval result (format {result.get('format')!r})"
        if isinstance(result, dict)
        else f"{path}: not a distil-jax eval result"
    )
  return result


def _fmt(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
  return str(value)


def table(header: list[str], rows: list[list]) -> str:
  cells = [header] + [[_fmt(v) for v in row] for row in rows]
  widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
  lines = [
      "  ".join(
          str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))
      )
      for r in cells
  ]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def render(result: dict) -> str:
  """The readable summary of one run."""
  out = [f"evaluation of {result.get('name')} ({result.get('source', {}).get('kind')})"]
  metrics = flat_metrics(result)
  out.append(table(["metric", "value"], [[k, v] for k, v in metrics.items()]))
  per = (result.get("ifeval") or {}).get("per_instruction") or {}
  if per:
    out.append("")
    out.append(
        table(
            ["instruction", "count", "strict", "loose"],
            [[k, v["count"], v["strict_acc"], v["loose_acc"]] for k, v in per.items()],
        )
    )
  for section in ("mt_bench", "alpaca_eval"):
    if result.get(section):
      out.append(f"\n{section}: {result[section]['note']}")
  return "\n".join(out)


def compare(results: list[dict], names: list[str]) -> str:
  metric_keys = list(
      dict.fromkeys(k for r in results for k in r.get("metrics", {}))
  )  # headline order
  lines = [
      table(
          ["metric", *names],
          [[k, *[r.get("metrics", {}).get(k) for r in results]] for k in metric_keys],
      )
  ]
  types = sorted(
      {t for r in results for t in ((r.get("ifeval") or {}).get("per_instruction") or {})}
  )
  if types:
    rows = []
    for t in types:
      row = [t]
      for r in results:
        v = ((r.get("ifeval") or {}).get("per_instruction") or {}).get(t)
        row.append(None if v is None else f"{v['strict_acc']:.2f}/{v['loose_acc']:.2f}")
      rows.append(row)
    lines += [
        "",
        "per instruction type (strict/loose accuracy)",
        table(["instruction", *names], rows),
    ]
  return "\n".join(lines)


def compare_chart(results: list[dict], names: list[str], path: str) -> None:
  """Two panels: headline accuracies (grouped bars) and per-instruction strict accuracy."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  acc_keys = [
      k
      for k in (
          "ifeval.prompt_level_strict_acc",
          "ifeval.prompt_level_loose_acc",
          "ifeval.inst_level_strict_acc",
          "ifeval.inst_level_loose_acc",
          "alpaca_eval.win_rate",
          "alpaca_eval.lc_win_rate",
      )
      if any(k in r.get("metrics", {}) for r in results)
  ]
  types = sorted(
      {t for r in results for t in ((r.get("ifeval") or {}).get("per_instruction") or {})}
  )
  fig, axes = plt.subplots(
      1, 2, figsize=(16, max(5, 0.28 * len(types) + 1.5)), gridspec_kw={"width_ratios": [1, 1.4]}
  )
  width = 0.8 / max(1, len(results))
  for i, (r, name) in enumerate(zip(results, names)):
    m = r.get("metrics", {})
    axes[0].bar(
        np.arange(len(acc_keys)) + i * width, [m.get(k, 0.0) for k in acc_keys], width, label=name
    )
    per = (r.get("ifeval") or {}).get("per_instruction") or {}
    axes[1].barh(
        np.arange(len(types)) + i * width,
        [per.get(t, {}).get("strict_acc", 0.0) for t in types],
        width,
        label=name,
    )
  axes[0].set_xticks(
      np.arange(len(acc_keys)) + 0.4 - width / 2,
      [k.replace(".", "\n", 1) for k in acc_keys],
      fontsize=7,
  )
  axes[0].set_ylim(0, 1)
  axes[0].set_title("headline accuracies")
  axes[0].legend(fontsize=8)
  axes[1].set_yticks(np.arange(len(types)) + 0.4 - width / 2, types, fontsize=7)
  axes[1].set_xlim(0, 1)
  axes[1].invert_yaxis()  # alphabetical from the top
  axes[1].set_title("IFEval strict accuracy per instruction type")
  fig.tight_layout()
  target = Path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.with_name(f".{target.name}.tmp.png")
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, target)
