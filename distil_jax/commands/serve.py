"""`distil-jax serve`: an OpenAI-compatible server (/v1/chat/completions, /v1/completions,
/v1/models, /health, /metrics) over a checkpoint, batching concurrent requests into one generate
call. SIGTERM drains: requests in flight are answered, new ones get 503."""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
  parser.add_argument("--model", required=True, help="HF checkpoint directory")
  parser.add_argument("--host", default="127.0.0.1")
  parser.add_argument("--port", type=int, default=8000)
  parser.add_argument(
      "--served_model_name",
      default=None,
      help="name clients pass as `model` (default: the directory's name)",
  )
  parser.add_argument(
      "--strict_model_name",
      action="store_true",
      help="answer 404 to any other `model` (default: every name reaches it)",
  )
  parser.add_argument(
      "--max_model_len",
      type=int,
      default=None,
      help="prompt + completion limit (default: the model's max positions)",
  )
  parser.add_argument(
      "--max_tokens",
      type=int,
      default=512,
      help="max_tokens of a request that leaves it out, capped to the rest of "
      "the context (0: the whole rest of the context)",
  )
  parser.add_argument(
      "--max_batch",
      type=int,
      default=32,
      help="rows a batch (with --continuous: slots of the KV cache)",
  )
  parser.add_argument(
      "--continuous",
      action="store_true",
      help="continuous batching: new requests join the running decode between "
      "steps; the KV cache holds max_batch x max_model_len positions",
  )
  parser.add_argument(
      "--max_wait_ms",
      type=float,
      default=10.0,
      help="how long an idle server waits to fill a batch",
  )
  parser.add_argument(
      "--dtype",
      choices=("float32", "bfloat16"),
      default=None,
      help="parameter and compute dtype (default: the checkpoint's)",
  )
  parser.add_argument(
      "--read_timeout_s",
      type=float,
      default=60.0,
      help="time a client has to finish sending a request",
  )
  parser.add_argument(
      "--idle_timeout_s",
      type=float,
      default=300.0,
      help="time a keep-alive connection may sit idle",
  )


def run(args) -> int:
  from distil_jax.commands.errors import one_line

  return one_line("serve", lambda: _run(args))


def _run(args) -> int:
  from distil_jax.generate.loading import generation_defaults, load_model, load_tokenizer_for
  from distil_jax.model.config import parse_dtype
  from distil_jax.serve import ServeConfig, serve_forever

  name = args.served_model_name or Path(args.model).resolve().name
  config = ServeConfig(
      served_model_names=(name,),
      strict_model_name=args.strict_model_name,
      max_model_len=args.max_model_len,
      default_max_tokens=args.max_tokens or None,
      default_sampling=generation_defaults(args.model),
      max_batch=args.max_batch,
      max_wait_s=args.max_wait_ms / 1000,
      continuous=args.continuous,
      read_timeout_s=args.read_timeout_s,
      idle_timeout_s=args.idle_timeout_s,
  )
  _check_positions(args.model, args.max_model_len)  # bad input: one line via one_line()
  tokenizer = load_tokenizer_for(args.model)
  model = load_model(args.model, dtype=parse_dtype(args.dtype) if args.dtype else None)
  serve_forever(model, tokenizer, args.host, args.port, config)
  return 0


def _check_positions(model_dir: str, max_model_len: int | None) -> None:
  """Refuses an impossible --max_model_len before a long model load (the app checks it again)."""
  config = Path(model_dir) / "config.json"
  if max_model_len is None or not config.is_file():
    return
  import json

  positions = json.loads(config.read_text()).get("max_position_embeddings")
  if positions is not None and not 0 < max_model_len <= positions:
    raise ValueError(
        f"--max_model_len {max_model_len} is beyond the model's {positions} "
        f"positions (max_position_embeddings in {config})"
    )
