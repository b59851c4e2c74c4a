"""Logit KD plus progressive hidden-state fusion on CPU, tiny student and teacher.

    distil-jax train --config configs/fusion/tiny.py --workdir /tmp/fusion \
        --config.data.path=/tmp/sft-data --config.frozen.teacher.path=TEACHER_DIR

Each student layer is mapped to the teacher layer at the same relative depth; a learned
projection (student width -> teacher width, trained with the student, never exported) maps its
output, and its cosine distance to the teacher's output on the response tokens is added with
weight `fusion_weight`. The pairs enter from the top layer down over the first half of
training, each ramping linearly (README: hidden-state fusion). Expected: `metrics.jsonl` has
`ce`, `kd` and `fusion` (mean distance per layer-token, unweighted); `fusion` falls.
`distil-jax export` of the run writes a plain Qwen2.5 checkpoint.
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
  c.loss_logits_dtype = "float32"
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
      fusion_weight=1.0,
      fusion_distance="cosine",
      fusion_ramp="linear",
      fusion_pairs=0,
      fusion_enter_fraction=0.5,
  )
  c.frozen = dict(teacher=dict(path="", dtype="float32"))
  c.log_every = 10
  c.model = dict(
      preset="tiny",
      vocab_size=151936,
      param_dtype="float32",
      compute_dtype="float32",
      remat_policy="none",
      attention_impl="xla",
  )
  c.init = dict(kind="fresh", path="")
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.rules = DEFAULT_RULES
  c.optim = dict(
      lr=3e-3,
      schedule="cosine",
      warmup_steps=10,
      min_lr_ratio=0.1,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.0,
      clip_norm=1.0,
  )
  c.data = dict(
      path="", teacher_store="", seq_len=128, batch_size=8, seed=0, num_epochs=0, worker_count=0
  )
  c.checkpoint = dict(every_steps=50, keep=2, async_save=True)
  return c
