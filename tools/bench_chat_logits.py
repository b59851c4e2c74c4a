"""Cost of the chat-time path after curation: `prepare --require_teacher_logprobs` and
`distil-jax chat-logits` on synthetic curated records (no server, no JAX).

    PYTHONPATH=$PWD python tools/bench_chat_logits.py                  # 2,000 answers of ~120 tokens
    PYTHONPATH=$PWD python tools/bench_chat_logits.py --records 10000 --top_k 20

Each record's answer is tokenised with the shared tokenizer and given the entries a chat API
with `logprobs: true, top_logprobs: K` sends (`{token, logprob, id, top_logprobs}`, the answer
token first among random alternatives). Prints one JSON line: curated JSON bytes per answer token
(what the log-probs add to the curated shards), prepare seconds without and with the filter,
chat-logits records/s and positions/s, bytes per stored token on disk and before compression.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import tempfile
import time
from pathlib import Path

WORDS = (
    "the cat sat on a mat while distillation of large models into small ones runs fast "
    "über naïve 世界 code(x) = 42; print('hi') 123 456"
).split()


def _entries(tok, ids, k: int, rng: random.Random) -> list[dict]:
  """Chat log-prob entries of `ids` as our server sends them (incremental text, ids)."""
  out, before = [], ""
  for i, token in enumerate(ids):
    text = tok.decode(ids[: i + 1])
    piece = text[len(before) :] if text.startswith(before) else text
    before = text
    lps = sorted((-rng.expovariate(0.5) for _ in range(k)), reverse=True)
    alts = [token] + rng.sample(range(151_000), k - 1)
    out.append(
        {
            "token": piece,
            "logprob": lps[0],
            "id": token,
            "top_logprobs": [
                {"token": tok.decode([a]), "logprob": lp, "id": a} for a, lp in zip(alts, lps)
            ],
        }
    )
  return out


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--records", type=int, default=2000)
  parser.add_argument("--words", type=int, default=80, help="answer words (about 1.5 tokens each)")
  parser.add_argument("--top_k", type=int, default=5)
  parser.add_argument("--logprob_dtype", default="float16")
  args = parser.parse_args()

  from distil_jax.cli import main as cli
  from distil_jax.curate.shards import write_shards
  from distil_jax.tokenizer import load_tokenizer

  tok = load_tokenizer()
  rng = random.Random(0)
  root = Path(tempfile.mkdtemp(prefix="bench-chat-logits-"))
  records, answer_tokens, logprob_bytes = [], 0, 0
  for i in range(args.records):
    answer = " ".join(rng.choices(WORDS, k=args.words))
    ids = tok(answer, add_special_tokens=False)["input_ids"]
    entries = _entries(tok, ids, args.top_k, rng)
    answer_tokens += len(ids)
    logprob_bytes += len(json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode())
    records.append(
        {
            "id": f"rec-{i:06d}",
            "messages": [
                {"role": "user", "content": f"Say something ({i})."},
                {"role": "assistant", "content": answer},
            ],
            "lineage": {},
            "teacher_logprobs": entries,
        }
    )
  write_shards(str(root / "curated"), records, 4)
  shards = [str(p) for p in sorted((root / "curated").glob("curated-*.array_record"))]
  report = {
      "records": args.records,
      "answer_tokens": answer_tokens,
      "top_k": args.top_k,
      "curated_logprob_json_bytes_per_answer_token": round(logprob_bytes / answer_tokens, 1),
  }
  quiet = contextlib.redirect_stdout(io.StringIO())
  for name, extra in (
      ("prepare_s", []),
      ("prepare_require_teacher_logprobs_s", ["--require_teacher_logprobs"]),
  ):
    started = time.perf_counter()
    with quiet:
      code = cli(
          [
              "prepare",
              "--input",
              *shards,
              "--output",
              str(root / name),
              "--max_length",
              "4096",
              *extra,
          ]
      )
    assert code == 0
    report[name] = round(time.perf_counter() - started, 2)
  started = time.perf_counter()
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    code = cli(
        [
            "chat-logits",
            "--curated",
            str(root / "curated"),
            "--data",
            str(root / "prepare_require_teacher_logprobs_s"),
            "--output",
            str(root / "store"),
            "--logprob_dtype",
            args.logprob_dtype,
        ]
    )
  assert code == 0
  seconds = time.perf_counter() - started
  summary = json.loads(out.getvalue().strip().splitlines()[-1])
  manifest = json.loads((root / "store" / "manifest.json").read_text())
  report.update(
      chat_logits_s=round(seconds, 2),
      chat_logits_records_per_s=round(args.records / seconds, 1),
      chat_logits_positions_per_s=round(summary["stored_positions"] / seconds),
      examples_kept=manifest["counts"]["examples"],
      stored_positions=summary["stored_positions"],
      unscored_positions=summary["unscored_positions"],
      bytes_per_stored_token=manifest["bytes_per_stored_token"],
      payload_bytes_per_stored_token=manifest["payload_bytes_per_stored_token"],
      logprob_dtype=args.logprob_dtype,
      output=str(root),
  )
  print(json.dumps(report))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
