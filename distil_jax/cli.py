"""The `distil-jax` command line: one subcommand per pipeline stage.

Each subcommand lives in `distil_jax/commands/<name>.py` and exposes
`add_arguments(parser)` and `run(args) -> int`. Modules are imported only when
their command runs, so `distil-jax curate` works on a machine without JAX.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "convert": "HF checkpoint directory -> orbax checkpoint",
    "export": "orbax or HF checkpoint -> HF directory (safetensors, config, tokenizer)",
    "generate": "chat prompts (JSONL) -> completions (JSONL)",
    "prepare": "chat JSONL / curated shards -> tokenized ArrayRecord shards",
    "teacher-logits": "a teacher's top-k log-probs on prepared shards -> an offline KD store",
    "api-logits": "an OpenAI-compatible endpoint's prompt top-k log-probs -> an offline KD store",
    "chat-logits": "curated chat-time top-k log-probs (refine.agent.top_logprobs) -> an offline KD store",
    "train": "SFT / distillation / DPO from an ml-collections config",
    "bench": "throughput benchmark of a train step or of decoding",
    "curate": "teacher-agent curation pipeline over OpenAI-compatible APIs",
    "serve": "OpenAI-compatible server over the generation engine",
    "make-pairs": "teacher answers vs the student's own generations -> preference pairs (JSONL)",
    "prepare-pairs": "preference pairs -> tokenized pair shards (chat template, response masks)",
    "ref-logprobs": "tokenized pairs -> the reference model's summed response log-probs",
    "eval": "instruction following (IFEval), judges, perplexity and speed of a checkpoint or endpoint",
}


def _load(name: str):
  return importlib.import_module(f"distil_jax.commands.{name.replace('-', '_')}")


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog="distil-jax", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, help_text in COMMANDS.items():
    sub.add_parser(name, help=help_text, add_help=False)
  if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
    parser.print_help() if not argv or argv[0] in ("-h", "--help") else parser.error(
        f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}"
    )
    return 0
  name, rest = argv[0], argv[1:]
  module = _load(name)
  cmd_parser = argparse.ArgumentParser(prog=f"distil-jax {name}", description=COMMANDS[name])
  module.add_arguments(cmd_parser)
  args, unknown = cmd_parser.parse_known_args(rest)
  if unknown and not getattr(module, "ACCEPTS_OVERRIDES", False):
    cmd_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
  args.overrides = unknown
  return int(module.run(args) or 0)


if __name__ == "__main__":
  sys.exit(main())
