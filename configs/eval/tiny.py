"""`distil-jax eval` of a tiny random Qwen2.5-architecture checkpoint on CPU: every local measurement.

Build the checkpoint once (random weights, the real Qwen2.5 tokenizer saved beside them), then run:

    python -c "from distil_jax.testing.hf_models import make_hf_checkpoint as m; \\
from distil_jax.tokenizer import load_tokenizer as t; \\
t().save_pretrained(m('/tmp/eval-tiny/hf', vocab_size=151936, tie_word_embeddings=True, \\
max_position_embeddings=1024, initializer_range=0.3))"
    distil-jax eval --config configs/eval/tiny.py                  # add --data SHARDS for perplexity

Expected (a minute or two on 2 CPU cores): 24 of our shipped IFEval-style prompts answered with
32 greedy new tokens, strict/loose accuracies near 0 (random weights produce gibberish; the few
instructions a gibberish answer satisfies, e.g. no_comma or letter_frequency "less than", pass),
new tokens/s at batch 1 and 32 beside transformers', written to /tmp/eval-tiny/result.json with the
per-prompt answers in /tmp/eval-tiny/result.json.ifeval.jsonl. Every key is a `distil-jax eval` flag;
a flag given on the command line wins over the config.
"""

import ml_collections


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  c.model = "/tmp/eval-tiny/hf"
  c.name = "tiny-random"
  c.output = "/tmp/eval-tiny/result.json"
  c.dtype = "float32"
  c.limit = 24
  c.max_new_tokens = 32
  c.batch_size = 8
  c.speed = True
  c.speed_batches = "1,32"
  c.speed_prompt_len = 16
  c.speed_new_tokens = 16
  c.seq_len = 256
  c.ppl_batch_size = 4
  c.loss_chunk = 64
  return c
