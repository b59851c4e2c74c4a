"""Offline top-k logit KD on CPU: the teacher ran once, its top-k rides in the batches.

    distil-jax teacher-logits --teacher TEACHER_DIR --data /tmp/sft-data \
        --output /tmp/teacher-top10 --top_k 10
    distil-jax train --config configs/kd/tiny_offline.py --workdir /tmp/kd-offline \
        --config.data.path=/tmp/sft-data --config.data.teacher_store=/tmp/teacher-top10

No teacher is in memory while training. The store is joined to each example after shuffling
and packing, by example id and a hash of its tokens; a mismatch stops the run. The config
argument picks the treatment of the teacher mass outside the top-k: `:ignore` (the method's
reference code, the default), `:renormalise`, `:bucket`.
Expected: `metrics.jsonl` has `ce` and `kd` per response token; both fall.
"""

import ml_collections

from distil_jax.sharding import DEFAULT_RULES


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 100
  c.grad_accum = 1
  c.loss_chunk = 64
  c.loss_positions = 0  # >0: the LM head only at each row's first K trained positions
  c.loss_logits_dtype = "float32"
  c.loss = dict(
      kind="kd",
      source="offline",
      divergence="forward_kl",
      jsd_beta=0.5,
      tail=arg or "ignore",
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
  c.frozen = dict()  # offline: no teacher in memory
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
