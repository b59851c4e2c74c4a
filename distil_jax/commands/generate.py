"""`distil-jax generate`: chat prompts (JSONL) -> completions (JSONL), e.g. a student's answers.

Each input line is a JSON object with `messages` (OpenAI chat form); trailing assistant turns are
dropped from the prompt, so a curated pair yields the model's own answer to the same instruction.
Each output line is the input object unchanged plus `completion`, `finish_reason` and
`completion_tokens`, in input order. The output is written to a temporary name and renamed, with
the mode the umask gives any new file.

Everything is checked before the model generates anything: arguments, roles (system, user,
assistant, tool), and every prompt's length. A prompt whose tokens plus --max_new_tokens exceed the
model's positions stops the run before generation, naming its line in the input file; with
--skip_overlong such lines are skipped instead, counted and named on stderr, and left out of the
output.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def add_arguments(parser) -> None:
  parser.add_argument("--model", required=True, help="HF checkpoint directory")
  parser.add_argument("--input", required=True, help="JSONL with a `messages` list per line")
  parser.add_argument("--output", required=True, help="JSONL to write (atomically)")
  parser.add_argument("--max_new_tokens", type=int, default=512)
  parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  parser.add_argument("--top_p", type=float, default=1.0)
  parser.add_argument("--top_k", type=int, default=0, help="0 = off")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
      "--dtype",
      choices=("float32", "bfloat16"),
      default=None,
      help="parameter/compute dtype (default: the checkpoint's)",
  )
  parser.add_argument(
      "--skip_overlong",
      action="store_true",
      help="skip prompts too long for the model (named on stderr) instead of failing",
  )


ROLES = ("system", "user", "assistant", "tool")


def check_arguments(args) -> None:
  if args.max_new_tokens < 1:
    raise ValueError(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")
  if args.batch_size < 1:
    raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
  if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0:
    raise ValueError(
        f"sampling: need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got "
        f"{args.temperature}, {args.top_p}, {args.top_k}"
    )


def read_prompts(path: str) -> list[tuple[dict, list[dict], int]]:
  """(record, prompt messages, line number) per line; a bad line is an error naming file and line."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
      messages = record.get("messages") if isinstance(record, dict) else None
      if not isinstance(messages, list) or not all(
          isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m
          for m in messages
      ):
        raise ValueError(
            f"{where}: expected an object with `messages`: a list of " "{role, content}"
        )
      unknown = [m["role"] for m in messages if m["role"] not in ROLES]
      if unknown:
        raise ValueError(
            f"{where}: unknown role {unknown[0]!r}; expected one of {', '.join(ROLES)}"
        )
      prompt = list(messages)
      while prompt and prompt[-1]["role"] == "assistant":
        prompt.pop()
      if not prompt:
        raise ValueError(f"{where}: no user turn to answer")
      rows.append((record, prompt, lineno))
  if not rows:
    raise ValueError(f"{path}: no prompts")
  return rows


def run(args) -> int:
  from distil_jax.commands.errors import one_line

  return one_line("generate", lambda: _run(args))


def _run(args) -> int:
  from distil_jax.generate import Generator, Sampling, encode_chat, decode, stop_ids_for
  from distil_jax.generate.loading import load_model, load_tokenizer_for
  from distil_jax.model.config import parse_dtype

  check_arguments(args)
  rows = read_prompts(args.input)
  check_writable(args.output)
  sampling = Sampling(args.temperature, args.top_k, args.top_p)
  tokenizer = load_tokenizer_for(args.model)
  model = load_model(args.model, dtype=parse_dtype(args.dtype) if args.dtype else None)
  generator = Generator(model, stop_ids=stop_ids_for(tokenizer))
  prompts = [encode_chat(tokenizer, messages) for _, messages, _ in rows]
  limit = generator.config.max_position_embeddings
  overlong = [i for i, p in enumerate(prompts) if len(p) + args.max_new_tokens > limit]
  if overlong:
    where = ", ".join(f"{args.input}:{rows[i][2]} ({len(prompts[i])} tokens)" for i in overlong[:5])
    more = f" and {len(overlong) - 5} more" if len(overlong) > 5 else ""
    message = (
        f"{len(overlong)} prompt(s) + --max_new_tokens {args.max_new_tokens} exceed the model's "
        f"{limit} positions: {where}{more}"
    )
    if not args.skip_overlong:
      raise ValueError(message + "; nothing generated (--skip_overlong skips them)")
    print(f"generate: skipping {message}", file=sys.stderr)
  skipped = set(overlong)
  # Similar lengths share a batch, so less padding; results go back to input order.
  order = sorted((i for i in range(len(rows)) if i not in skipped), key=lambda i: len(prompts[i]))
  if not order:
    raise ValueError(f"{args.input}: every prompt is too long; nothing to generate")
  results: dict[int, dict] = {}
  start, new_tokens = time.perf_counter(), 0
  for b in range(0, len(order), args.batch_size):
    idx = order[b : b + args.batch_size]
    completions = generator.generate(
        [prompts[i] for i in idx],
        max_new_tokens=args.max_new_tokens,
        sampling=sampling,
        seed=[args.seed * 1_000_003 + i for i in idx],
    )
    for i, c in zip(idx, completions):
      new_tokens += len(c.tokens)
      results[i] = {
          **rows[i][0],
          "completion": decode(tokenizer, c.tokens),
          "finish_reason": c.finish_reason,
          "completion_tokens": len(c.tokens),
      }
    print(
        f"generate: {len(results)}/{len(order)} prompts, {new_tokens} new tokens, "
        f"{new_tokens / (time.perf_counter() - start):.1f} tok/s",
        file=sys.stderr,
    )
  write_jsonl_atomic(args.output, (results[i] for i in range(len(rows)) if i in results))
  if skipped:
    print(
        f"generate: wrote {len(results)} answers; skipped {len(skipped)} over-long prompt(s)",
        file=sys.stderr,
    )
  return 0


def check_writable(path: str) -> None:
  """Fails before the model loads when the output's directory cannot take a file."""
  directory = Path(path).parent
  directory.mkdir(parents=True, exist_ok=True)
  if Path(path).is_dir():
    raise IsADirectoryError(f"--output {path} is a directory")
  if not os.access(directory, os.W_OK | os.X_OK):
    raise PermissionError(f"--output: cannot write in {directory}")


def write_jsonl_atomic(path: str, records) -> None:
  target = Path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      for record in records:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, target)
  except BaseException:
    os.unlink(tmp)
    raise
