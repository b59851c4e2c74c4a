"""`distil-jax generate`: chat prompts (JSONL) -> completions (JSONL), e.g. a student's answers.

Each input line is a JSON object with `messages` (OpenAI chat form); trailing assistant turns are
dropped from the prompt, so a curated pair yields the model's own answer to the same instruction.
Each output line is the input object unchanged plus `completion`, `finish_reason` and
`completion_tokens`, in input order. The output is written to a temporary name and renamed.
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
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="parameter/compute dtype (default: the checkpoint's)")


def read_prompts(path: str) -> list[tuple[dict, list[dict]]]:
    """(record, prompt messages) per line; a bad line is an error naming file and line."""
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
                    for m in messages):
                raise ValueError(f"{where}: expected an object with `messages`: a list of "
                                 "{role, content}")
            prompt = list(messages)
            while prompt and prompt[-1]["role"] == "assistant":
                prompt.pop()
            if not prompt:
                raise ValueError(f"{where}: no user turn to answer")
            rows.append((record, prompt))
    return rows


def run(args) -> int:
    from distil_jax.generate import Generator, Sampling, encode_chat, decode, stop_ids_for
    from distil_jax.generate.loading import load_model, load_tokenizer_for
    from distil_jax.model.config import parse_dtype

    rows = read_prompts(args.input)
    sampling = Sampling(args.temperature, args.top_k, args.top_p)
    tokenizer = load_tokenizer_for(args.model)
    model = load_model(args.model, dtype=parse_dtype(args.dtype) if args.dtype else None)
    generator = Generator(model, stop_ids=stop_ids_for(tokenizer))
    prompts = [encode_chat(tokenizer, messages) for _, messages in rows]
    # Similar lengths share a batch, so less padding; results go back to input order.
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))
    results: dict[int, dict] = {}
    start, new_tokens = time.perf_counter(), 0
    for b in range(0, len(order), args.batch_size):
        idx = order[b: b + args.batch_size]
        completions = generator.generate(
            [prompts[i] for i in idx], max_new_tokens=args.max_new_tokens, sampling=sampling,
            seed=[args.seed * 1_000_003 + i for i in idx])
        for i, c in zip(idx, completions):
            new_tokens += len(c.tokens)
            results[i] = {**rows[i][0], "completion": decode(tokenizer, c.tokens),
                          "finish_reason": c.finish_reason, "completion_tokens": len(c.tokens)}
        print(f"generate: {len(results)}/{len(rows)} prompts, {new_tokens} new tokens, "
              f"{new_tokens / (time.perf_counter() - start):.1f} tok/s", file=sys.stderr)
    write_jsonl_atomic(args.output, (results[i] for i in range(len(rows))))
    return 0


def write_jsonl_atomic(path: str, records) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
