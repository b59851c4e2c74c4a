"""Online logit KD on CPU: a tiny Qwen2-architecture student, its teacher inside the step.

    distil-jax train --config configs/kd/tiny_online.py --workdir /tmp/kd-online \
        --config.data.path=/tmp/sft-data --config.frozen.teacher.path=TEACHER_DIR

TEACHER_DIR is anything `distil_jax.loading.open_model` opens (a HF directory, a `distil-jax
convert` checkpoint, a training run) with the student's tokenizer. The student is SFT'd and
distilled at once: (1 - alpha) CE + alpha T^2 KL(teacher || student) over the response tokens.
Expected: `metrics.jsonl` gains `ce`, `kd` (per response token) besides `loss`; both fall.
`:jsd` or `:reverse` as the config argument picks another divergence.
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
  divergence = {None: "forward_kl", "jsd": "jsd", "reverse": "reverse_kl"}[arg]
  c.loss = dict(
      kind="kd",
      source="online",
      divergence=divergence,
      jsd_beta=0.5,
      tail="ignore",
      online_top_k=0,
      alpha=0.5,
      alpha_end=0.5,
      alpha_ramp="constant",
      temperature=2.0,
      temperature_end=1.0,
      temperature_ramp="linear",
      vocab_columns=0,
      fusion_weight=0.0,
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
  c.init = dict(kind="fresh", path="")  # fresh | hf | orbax (a checkpoint or a run)
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
