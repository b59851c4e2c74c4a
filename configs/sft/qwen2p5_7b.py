"""SFT of a Qwen2.5-7B student: bf16 weights, FSDP over every device, full remat.

    distil-jax train --config configs/sft/qwen2p5_7b.py:/models/Qwen2.5-7B-Instruct \
        --workdir /ckpt/sft-qwen2p5_7b --config.data.path=/data/sft-shards
    distil-jax bench --config configs/sft/qwen2p5_7b.py           # speed of this step

The `:ARG` is a Hugging Face checkpoint directory to start from (without it: random init).
Expected: needs FSDP over >= 2 80 GB GPUs (weights + AdamW state are ~60 GB in bf16).
On CPU pass --config.model.attention_impl=xla (cuDNN attention is GPU-only).
--config.model.max_segments_per_row=N (e.g. 16) keeps packed documents apart with cuDNN's
ragged layout instead of a dense [B,1,T,T] bias (Hopper or later; rows must hold <= N documents).
"""

import ml_collections

from distil_jax.sharding import DEFAULT_RULES


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 2000
  c.grad_accum = 2
  c.loss_chunk = 512
  c.loss_positions = 0  # >0: the LM head only at each row's first K trained positions
  c.loss_logits_dtype = "float32"  # or "bfloat16": half the logits traffic
  c.loss = dict(kind="sft")  # the loss table: distil_jax/train/loss_config.py
  c.frozen = dict()  # no teacher or reference model
  c.log_every = 10
  c.model = dict(
      preset="qwen2p5_7b",
      param_dtype="bfloat16",
      compute_dtype="bfloat16",
      remat_policy="full",
      attention_impl="cudnn",
      max_segments_per_row=0,
  )
  c.init = dict(kind="hf" if arg else "fresh", path=arg or "")
  c.mesh = dict(data=1, fsdp=-1, tensor=1)
  c.rules = DEFAULT_RULES  # logical axis -> mesh axis; replace to change the policy
  c.optim = dict(
      lr=5e-06,
      schedule="cosine",
      warmup_steps=100,
      min_lr_ratio=0.1,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.0,
      clip_norm=1.0,
  )
  c.data = dict(path="", seq_len=2048, batch_size=16, seed=0, num_epochs=0, worker_count=4)
  c.checkpoint = dict(every_steps=500, keep=3, async_save=True)
  return c
