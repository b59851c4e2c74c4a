"""Cost of JSON mode per decode step, on the continuous-batching engine (`SlotDecoder`), no HTTP.

    PYTHONPATH=$PWD python tools/bench_json_mode.py                      # tiny model on CPU
    PYTHONPATH=$PWD python tools/bench_json_mode.py --shape qwen2p5_0p5b --batches 1,8,32

For each batch size B and each sampling (greedy; temperature 1 with top_p 0.95) it times the
decode steps of B free-text rows, then of B-1 free-text rows beside one JSON-mode row, then of B
JSON-mode rows (`--schema`: json_schema mode with a 4-property schema), every row running the full `--steps` (random-init weights: text rows are held open
with min_tokens, a JSON row's budget closes its object on the last steps). Prints ms per step, the
extra ms a JSON row costs a step, and the host-side choice alone (`JsonChooser.choose`) per token.
Compilation happens in an untimed warm-up run of each case.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time


def _model(shape: str):
  import jax
  import jax.numpy as jnp
  from distil_jax.model import ModelConfig, create_model
  from distil_jax.sharding import MeshConfig, make_mesh

  dtype = jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  if shape == "tiny":  # the real vocabulary, so the real tokenizer applies
    cfg = ModelConfig.tiny(vocab_size=151936, param_dtype=dtype, compute_dtype=dtype)
  else:
    cfg = getattr(ModelConfig, shape)(param_dtype=dtype, compute_dtype=dtype)
  return create_model(cfg, make_mesh(MeshConfig(data=1), devices=jax.devices()[:1]))


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "colour": {"enum": ["black", "white", "tabby"]},
        "toys": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
    },
    "required": ["name", "age", "colour"],
    "additionalProperties": False,
}


class _Timed:
  """A JsonChooser whose `choose` adds its wall time to a shared total."""

  def __init__(self, chooser, total: list):
    self.chooser, self.total = chooser, total

  def choose(self, logits_V):
    start = time.perf_counter()
    token = self.chooser.choose(logits_V)
    self.total[0] += time.perf_counter() - start
    self.total[1] += 1
    return token


def _run(decoder, prompt, table, grammar, sampling, batch: int, hosted: int, steps: int):
  """(ms per step, ms per host choice) for `batch` rows of which `hosted` are JSON mode."""
  from distil_jax.generate.constrain import JsonChooser

  total = [0.0, 0]
  for i in range(batch):
    json_row = i >= batch - hosted
    s = sampling if json_row else dataclasses.replace(sampling, min_new_tokens=steps)
    chooser = JsonChooser(table, sampling, 0, i, steps, grammar) if json_row else None
    chooser = _Timed(chooser, total) if json_row else None
    decoder.admit(i, prompt, max_new=steps, sampling=s, seed=0, salt=i, chooser=chooser)
  total[:] = [0.0, 0]
  start, count = time.perf_counter(), 0
  while decoder.busy:
    decoder.step()
    count += 1
  elapsed = time.perf_counter() - start
  return 1e3 * elapsed / count, 1e3 * total[0] / max(total[1], 1)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", default="tiny")
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--steps", type=int, default=64)
  parser.add_argument("--max_len", type=int, default=256)
  parser.add_argument(
      "--schema", action="store_true", help="json_schema mode (a 4-property schema)"
  )
  args = parser.parse_args(argv)

  import jax

  from distil_jax.generate.chat import encode_chat, stop_ids_for
  from distil_jax.generate.constrain import TokenTable
  from distil_jax.generate import json_grammar, json_schema
  from distil_jax.generate.engine import Generator
  from distil_jax.generate.sampling import GREEDY, Sampling
  from distil_jax.generate.slots import SlotDecoder
  from distil_jax.tokenizer import load_tokenizer

  tokenizer = load_tokenizer()
  generator = Generator(_model(args.shape), stop_ids=stop_ids_for(tokenizer))
  start = time.perf_counter()
  table = TokenTable.from_tokenizer(tokenizer, generator.config.vocab_size)
  print(f"token table: {time.perf_counter() - start:.2f} s ({generator.config.vocab_size} ids)")
  grammar = json_grammar.OBJECT
  if args.schema:
    grammar = json_schema.SchemaGrammar(json_schema.compile_schema(SCHEMA))
  prompt = encode_chat(tokenizer, [{"role": "user", "content": "A cat as JSON, please."}])
  batches = [int(b) for b in args.batches.split(",")]
  decoder = SlotDecoder(generator, slots=max(batches), max_len=args.max_len)
  print(f"device: {jax.devices()[0].device_kind}, shape {args.shape}, {args.steps} steps")
  print(
      "| sampling | B | text ms/step | + 1 JSON row ms/step | all JSON ms/step | choice ms/token |"
  )
  print("|---|---|---|---|---|---|")
  for name, sampling in (("greedy", GREEDY), ("T=1, top_p=0.95", Sampling(1.0, 0, 0.95))):
    for batch in batches:
      cases = [0, 1, batch] if batch > 1 else [0, 1]
      figures = {}
      for hosted in cases:
        run = lambda: _run(decoder, prompt, table, grammar, sampling, batch, hosted, args.steps)
        run()  # compile
        figures[hosted] = run()
      every = figures[batch][0] if batch > 1 else figures[1][0]
      print(
          f"| {name} | {batch} | {figures[0][0]:.2f} | {figures[1][0]:.2f} | {every:.2f} "
          f"| {figures[1][1]:.2f} |",
          flush=True,
      )
  print(json.dumps({"shape": args.shape, "steps": args.steps, "schema": args.schema}))


if __name__ == "__main__":
  main()
