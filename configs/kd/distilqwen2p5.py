"""The DistilQwen2.5 white-box stage, as published: offline top-10 teacher probabilities,
forward KL mixed 0.5/0.5 with cross-entropy, no temperature, sequence 512, lr 2e-5, 3 epochs,
cosine with 10% warm-up, starting from the SFT checkpoint; teacher Qwen2.5-72B-Instruct.

    # 1. the teacher's top-10 over the exact token sequences the student trains on
    distil-jax teacher-logits --teacher Qwen2.5-72B-Instruct/ --data DATA --output TOP10 \
        --top_k 10 --max_length 512 --dtype bfloat16 --mesh fsdp=8
    # 2. distil (STEPS = 3 epochs: 3 * examples / 64 packed rows of 512; see DATA/manifest.json)
    distil-jax train --config configs/kd/distilqwen2p5.py:SFT_RUN --workdir RUN \
        --config.data.path=DATA --config.data.teacher_store=TOP10 \
        --config.steps=STEPS --config.optim.warmup_steps=STEPS/10

The argument is the student to start from (the SFT run's workdir, or an HF directory); its
checkpoint fixes the size. Without it the student is a fresh Qwen2.5-1.5B (for `distil-jax
bench`). `tail=ignore` reproduces
the reference code (stored top-10 probabilities, unnormalised, against the student's full
softmax); `renormalise` and `bucket` are the principled alternatives (README: offline store).
The student's vocabulary (151,936 rows) and the 72B teacher's (152,064) are aligned on the
tokenizer's 151,665 real tokens automatically.
"""

import ml_collections

from distil_jax.sharding import DEFAULT_RULES


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 3000  # set from the data: 3 epochs
  c.grad_accum = 1
  c.loss_chunk = 512
  c.loss_positions = 0  # >0: the LM head only at each row's first K trained positions
  c.loss_logits_dtype = "float32"
  c.loss = dict(
      kind="kd",
      source="offline",
      divergence="forward_kl",
      jsd_beta=0.5,
      tail="ignore",
      online_top_k=0,
      alpha=0.5,
      alpha_end=0.5,
      alpha_ramp="constant",
      temperature=1.0,
      temperature_end=1.0,
      temperature_ramp="constant",
      vocab_columns=0,
      fusion_weight=0.0,
      fusion_distance="cosine",
      fusion_ramp="linear",
      fusion_pairs=0,
      fusion_enter_fraction=0.5,
  )
  c.frozen = dict()
  c.log_every = 10
  c.model = dict(
      preset="qwen2p5_1p5b",
      param_dtype="float32",
      compute_dtype="bfloat16",
      remat_policy="dots",
      attention_impl="cudnn",
  )
  c.init = dict(kind="orbax" if arg else "fresh", path=arg or "")  # the SFT run
  c.mesh = dict(data=1, fsdp=-1, tensor=1)
  c.rules = DEFAULT_RULES
  c.optim = dict(
      lr=2e-5,
      schedule="cosine",
      warmup_steps=300,
      min_lr_ratio=0.0,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.0,
      clip_norm=1.0,
  )
  c.data = dict(
      path="", teacher_store="", seq_len=512, batch_size=64, seed=0, num_epochs=3, worker_count=2
  )
  c.checkpoint = dict(every_steps=500, keep=3, async_save=True)
  return c
