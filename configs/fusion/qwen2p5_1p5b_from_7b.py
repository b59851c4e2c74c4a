"""Online KD with progressive hidden-state fusion at real scale: Qwen2.5-7B-Instruct teacher
(bf16, in the step) -> Qwen2.5-1.5B student, sequence 2,048, on one GPU node or a pod slice.

    distil-jax train --config configs/fusion/qwen2p5_1p5b_from_7b.py:SFT_RUN --workdir RUN \
        --config.data.path=DATA --config.frozen.teacher.path=Qwen2.5-7B-Instruct/

The argument is the student to start from (an SFT run or HF directory); without it a fresh
Qwen2.5-1.5B (for `distil-jax bench --teacher_preset qwen2p5_7b`).

28 student layers map to 28 teacher layers at equal relative depth (fusion_pairs=7 keeps every
fourth pair: less memory, the teacher collects only the mapped layers). The vocabularies
(151,936 and 152,064 rows) are aligned on the tokenizer's 151,665 real tokens.
"""

import ml_collections

from distil_jax.sharding import DEFAULT_RULES


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 3000
  c.grad_accum = 1
  c.loss_chunk = 512
  c.loss_positions = 0  # >0: the LM head only at each row's first K trained positions
  c.loss_logits_dtype = "bfloat16"
  c.loss = dict(
      kind="kd",
      source="online",
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
      fusion_weight=0.5,
      fusion_distance="rms_mse",
      fusion_ramp="cosine",
      fusion_pairs=7,
      fusion_enter_fraction=0.5,
  )
  c.frozen = dict(teacher=dict(path="", dtype="bfloat16"))
  c.log_every = 10
  c.model = dict(
      preset="qwen2p5_1p5b",
      param_dtype="float32",
      compute_dtype="bfloat16",
      remat_policy="dots",
      attention_impl="cudnn",
  )
  c.init = dict(kind="orbax" if arg else "fresh", path=arg or "")
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
      path="", teacher_store="", seq_len=2048, batch_size=8, seed=0, num_epochs=0, worker_count=2
  )
  c.checkpoint = dict(every_steps=500, keep=3, async_save=True)
  return c
