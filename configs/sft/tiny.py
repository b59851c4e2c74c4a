"""SFT of a tiny Qwen2-architecture student (2 layers, hidden 64), from scratch, on CPU.

    distil-jax prepare --input data.jsonl --output /tmp/sft-data   # chat JSONL -> shards
    distil-jax train --config configs/sft/tiny.py --workdir /tmp/sft-tiny \
        --config.data.path=/tmp/sft-data

Expected: ~60 GFLOP a step (the 151,936-way LM head dominates): 14 s a step measured by
`distil-jax bench` on 2 heavily shared CPU cores, a few seconds on an idle one. The loss starts
at ln(151936) = 11.9 and falls (12.0 -> 11.3 within 4 steps in tests/train/test_sft_cli.py); the
workdir holds `metrics.jsonl`, TensorBoard events and orbax checkpoints; running the command
again resumes.
The vocabulary is the real Qwen2.5 one so the shards of the real tokenizer fit it.
"""

import ml_collections

from distil_jax.sharding import DEFAULT_RULES


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 100
  c.grad_accum = 1
  c.loss_chunk = 64
  c.loss_positions = 0  # >0: the LM head only at each row's first K trained positions
  c.loss_logits_dtype = "float32"  # or "bfloat16": half the logits traffic
  c.loss = dict(kind="sft")  # the loss table: distil_jax/train/loss_config.py
  c.frozen = dict()  # no teacher or reference model
  c.log_every = 10
  c.model = dict(
      preset="tiny",
      vocab_size=151936,
      param_dtype="float32",
      compute_dtype="float32",
      remat_policy="none",
      attention_impl="xla",
  )
  c.init = dict(kind="fresh", path="")  # fresh | hf | orbax
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.rules = DEFAULT_RULES  # logical axis -> mesh axis; replace to change the policy
  c.optim = dict(
      lr=3e-3,
      schedule="cosine",
      warmup_steps=20,
      min_lr_ratio=0.1,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.0,
      clip_norm=1.0,
  )
  c.data = dict(path="", seq_len=128, batch_size=8, seed=0, num_epochs=0, worker_count=0)
  c.checkpoint = dict(every_steps=50, keep=2, async_save=True)
  return c
