"""`distil-jax eval`: instruction following, judges, perplexity and speed of one checkpoint or endpoint.

    distil-jax eval --model HF_OR_ORBAX_DIR [--prompts input_data.jsonl] [--data SHARDS] [--speed]
    distil-jax eval --endpoint http://host:port/v1 --model_name NAME [--judge_endpoint URL --judge_model M
                    --mt_bench question.jsonl --alpaca_eval reference.json]
    distil-jax eval --config configs/eval/tiny.py          # every key of the config is a flag below
    distil-jax eval --compare a.json b.json ... [--chart compare.png]

Writes `--output` (JSON, atomically), the per-prompt answers and verdicts beside it
(`<output>.ifeval.jsonl`), and prints a table. Endpoint requests (answers and judge calls) are
journaled in `<output>.journal.jsonl`: rerunning a killed evaluation sends only what was not answered.
Exit 2 on bad input (one line naming the file, line or endpoint).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
  src = parser.add_argument_group("where answers come from")
  src.add_argument("--model", default=None, help="checkpoint directory (HF, orbax or training run)")
  src.add_argument(
      "--endpoint", default=None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
  )
  src.add_argument("--model_name", default=None, help="model name sent to --endpoint")
  src.add_argument("--api_key_env", default="", help="env var holding --endpoint's API key")
  src.add_argument("--max_in_flight", type=int, default=16)
  src.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
  src.add_argument(
      "--mesh", default=None, metavar="DATA,FSDP,TENSOR", help="in-process mesh, e.g. 1,1,8"
  )
  src.add_argument("--batch_size", type=int, default=32, help="in-process generation batch")
  gen = parser.add_argument_group("generation")
  gen.add_argument("--max_new_tokens", type=int, default=1024)
  gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  gen.add_argument("--top_p", type=float, default=1.0)
  gen.add_argument("--seed", type=int, default=0)
  tasks = parser.add_argument_group("what is measured")
  tasks.add_argument(
      "--prompts", default=None, help="IFEval-format JSONL (default: our own shipped set)"
  )
  tasks.add_argument("--skip_ifeval", action="store_true")
  tasks.add_argument(
      "--limit", type=int, default=0, help="first N prompts/questions only (0 = all)"
  )
  tasks.add_argument(
      "--data", default=None, help="prepared shards for held-out loss and perplexity"
  )
  tasks.add_argument("--seq_len", type=int, default=2048)
  tasks.add_argument("--ppl_batch_size", type=int, default=8)
  tasks.add_argument("--loss_chunk", type=int, default=512)
  tasks.add_argument("--mt_bench", default=None, help="MT-Bench question.jsonl (needs a judge)")
  tasks.add_argument(
      "--alpaca_eval", default=None, help="reference answers JSON/JSONL (needs a judge)"
  )
  tasks.add_argument("--judge_endpoint", default=None)
  tasks.add_argument("--judge_model", default=None)
  tasks.add_argument("--judge_api_key_env", default="")
  tasks.add_argument("--judge_max_tokens", type=int, default=1024)
  tasks.add_argument(
      "--speed", action="store_true", help="new tokens/s at --speed_batches, vs transformers"
  )
  tasks.add_argument("--speed_batches", default="1,32")
  tasks.add_argument("--speed_prompt_len", type=int, default=128)
  tasks.add_argument("--speed_new_tokens", type=int, default=256)
  tasks.add_argument(
      "--speed_repeats", type=int, default=3, help="timed runs per figure; the best is kept"
  )
  out = parser.add_argument_group("output")
  out.add_argument("--output", default=None, help="result JSON (default: eval/<name>.json)")
  out.add_argument("--name", default=None, help="label of this run in comparisons")
  out.add_argument("--no_progress", action="store_true")
  out.add_argument("--compare", nargs="+", default=None, metavar="RESULT_JSON")
  out.add_argument("--chart", default=None, help="PNG written by --compare (default: compare.png)")
  parser.add_argument(
      "--config", default=None, metavar="FILE[:ARG]", help="e.g. configs/eval/tiny.py"
  )


def apply_config(args, parser_defaults: dict) -> None:
  """Fills every argument still at its default from the config's keys (a flag on the command line wins)."""
  import ml_collections  # noqa: F401 (the config file builds a ConfigDict)

  path, _, arg = args.config.partition(":")
  spec = importlib.util.spec_from_file_location("_distil_jax_eval_config", path)
  if spec is None:
    raise ValueError(f"{path}: no config file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for key, value in module.get_config(arg or None).items():
    if key not in parser_defaults:
      raise ValueError(f"{path}: unknown key {key!r} (keys are `distil-jax eval` flags)")
    if getattr(args, key) == parser_defaults[key]:
      setattr(args, key, value)


def run(args: argparse.Namespace) -> int:
  try:
    if args.compare:
      return _compare(args)
    if args.config:
      parser = argparse.ArgumentParser()
      add_arguments(parser)
      apply_config(args, vars(parser.parse_args([])))
    return _evaluate(args)
  except (ValueError, FileNotFoundError) as e:
    print(f"distil-jax eval: {e}", file=sys.stderr)
    return 2


def _compare(args) -> int:
  from distil_jax.eval import report

  results = [report.read_result(p) for p in args.compare]
  names = [r.get("name") or p for r, p in zip(results, args.compare)]
  print(report.compare(results, names))
  chart = args.chart or "compare.png"
  report.compare_chart(results, names, chart)
  print(f"\nchart: {chart}")
  return 0


def _source(args, gen):
  from distil_jax.eval.answers import EndpointAnswers, InProcessAnswers, endpoint_config

  if bool(args.model) == bool(args.endpoint):
    raise ValueError("give exactly one of --model DIR or --endpoint URL")
  if args.endpoint:
    if not args.model_name:
      raise ValueError(f"--endpoint {args.endpoint}: --model_name is required")
    ep = endpoint_config(
        args.endpoint,
        args.model_name,
        api_key_env=args.api_key_env,
        max_in_flight=args.max_in_flight,
    )
    return EndpointAnswers(ep, args.output + ".journal.jsonl", progress=not args.no_progress)
  dtype = None
  if args.dtype:
    from distil_jax.model.config import parse_dtype

    dtype = parse_dtype(args.dtype)
  return InProcessAnswers(
      args.model,
      batch_size=args.batch_size,
      dtype=dtype,
      progress=not args.no_progress,
      mesh=_mesh(args.mesh),
  )


def _mesh(text: str | None):
  if not text:
    return None
  from distil_jax.sharding import MeshConfig, make_mesh

  try:
    data, fsdp, tensor = (int(x) for x in text.split(","))
  except ValueError:
    raise ValueError(f"--mesh {text!r}: expected DATA,FSDP,TENSOR, e.g. 1,1,8") from None
  return make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tensor))


def _evaluate(args) -> int:
  from distil_jax.eval import report
  from distil_jax.eval.answers import GenerationConfig

  gen = GenerationConfig(args.max_new_tokens, args.temperature, args.top_p, args.seed)
  name = args.name or (
      args.model_name if args.endpoint else (args.model or "").rstrip("/").split("/")[-1]
  )
  args.output = args.output or f"eval/{name}.json"
  for flag in ("prompts", "mt_bench", "alpaca_eval"):  # bad input fails before any model loads
    path = getattr(args, flag)
    if path and not os.path.isfile(path):
      raise FileNotFoundError(f"--{flag} {path}: no such file")
  if (args.mt_bench or args.alpaca_eval) and not (args.judge_endpoint and args.judge_model):
    raise ValueError("--mt_bench / --alpaca_eval need --judge_endpoint URL and --judge_model NAME")
  if (args.data or args.speed) and not args.model:
    raise ValueError("--data and --speed measure an in-process model: give --model DIR")
  source = _source(args, gen)
  result = {
      "name": name,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "source": {
          "kind": "endpoint" if args.endpoint else "model",
          "model": args.model_name or args.model,
          "endpoint": args.endpoint,
      },
      "generation": dataclasses.asdict(gen),
  }
  if not args.skip_ifeval:
    result["ifeval"] = _ifeval(args, source, gen)
  if args.mt_bench or args.alpaca_eval:
    from distil_jax.eval import judge_runs

    judge = judge_runs.judge_endpoint(args)
    journal = args.output + ".journal.jsonl"
    if args.mt_bench:
      result["mt_bench"] = judge_runs.mt_bench(source, judge, journal, args, gen)
    if args.alpaca_eval:
      result["alpaca_eval"] = judge_runs.alpaca_eval(source, judge, journal, args, gen)
  if args.data:
    from distil_jax.eval.perplexity import evaluate_loss

    result["perplexity"] = {
        "data": args.data,
        **evaluate_loss(
            source.model,
            args.data,
            seq_len=args.seq_len,
            batch_size=args.ppl_batch_size,
            chunk=args.loss_chunk,
            mesh=source.mesh,
            progress=not args.no_progress,
        ),
    }
  if args.speed:
    result["speed"] = _speed(source.model, args)
  if args.endpoint:
    result["source"]["requests"] = source.stats
    result["source"]["failures"] = source.failures
  report.write_result(args.output, result)
  print(report.render(report.read_result(args.output)))
  print(f"\nwrote {args.output}")
  return 0


def _ifeval(args, source, gen) -> dict:
  from distil_jax.eval import report
  from distil_jax.eval.ifeval import aggregate, read_prompts

  prompts_file = args.prompts or default_prompts()
  prompts = read_prompts(prompts_file)
  if args.limit:
    prompts = prompts[: args.limit]
  responses = source.answer(
      [[{"role": "user", "content": p.prompt}] for p in prompts], gen, desc="ifeval"
  )
  summary, rows = aggregate(prompts, responses)
  answers_file = args.output + ".ifeval.jsonl"
  report.write_atomic(answers_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
  return {"prompts_file": prompts_file, "answers_file": answers_file, **summary}


def default_prompts() -> str:
  import distil_jax.eval

  return os.path.join(os.path.dirname(distil_jax.eval.__file__), "data", "ifeval_distil.jsonl")


def _speed(model, args) -> list[dict]:
  from distil_jax.generate.bench import bench_hf, bench_ours

  rows = []
  for batch in (int(b) for b in str(args.speed_batches).split(",")):
    row = {
        "batch": batch,
        "prompt_len": args.speed_prompt_len,
        "new_tokens": args.speed_new_tokens,
        "ours": bench_ours(
            model, batch, args.speed_prompt_len, args.speed_new_tokens, args.speed_repeats
        ),
        "transformers": bench_hf(
            model.cfg, batch, args.speed_prompt_len, args.speed_new_tokens, args.speed_repeats
        ),
    }
    print(
        f"speed batch {batch}: distil-jax {row['ours']['end_to_end_tok_s']:.1f} new tok/s, "
        f"transformers {row['transformers']['end_to_end_tok_s']:.1f}",
        file=sys.stderr,
    )
    rows.append(row)
  return rows
