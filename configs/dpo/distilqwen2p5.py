"""The method's preference stage: DPO of a DistilQwen2.5 student (1.5B) from its SFT or KD
checkpoint, teacher answers chosen against the student's own; beta 0.1, lr 2e-5.

    distil-jax make-pairs --student /ckpt/kd-1p5b --input /data/curated --output /data/pairs
    distil-jax prepare-pairs --input /data/pairs --output /data/pairs-tok --max_length 1024
    distil-jax ref-logprobs --model /ckpt/kd-1p5b --pairs /data/pairs-tok \
        --output /data/pairs-ref --dtype bfloat16
    distil-jax train --config configs/dpo/distilqwen2p5.py:/ckpt/kd-1p5b --workdir /ckpt/dpo-1p5b \
        --config.data.path=/data/pairs-tok --config.loss.reference_logprobs=/data/pairs-ref
    distil-jax export --model /ckpt/dpo-1p5b --output /models/dpo-1p5b

`:ARG` is the SFT or KD checkpoint (training run, orbax or HF directory), the same model the
reference log-probs were computed with. Pairs of 2 x 1,024 tokens, 8 pairs a step (16 rows).
`--config.loss.variant=length_normalised` keeps DPO from moving answer length; a larger student:
`--config.model.preset` is read from the checkpoint itself.
"""

import ml_collections

from distil_jax.sharding import DEFAULT_RULES


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 1000
  c.grad_accum = 1
  c.loss_chunk = 256
  c.loss_positions = 0  # >0: the LM head only at each row's first K trained positions
  c.loss_logits_dtype = "float32"
  c.loss = dict(
      kind="dpo",
      variant="sigmoid",
      beta=0.1,
      label_smoothing=0.0,
      gamma=0.0,
      sft_weight=0.0,
      reference_logprobs="",
      online_reference=False,
  )
  c.frozen = dict(reference=dict(path=arg or "", dtype="bfloat16"))  # read only when online
  c.log_every = 10
  c.model = dict(
      preset="qwen2p5_1p5b",
      param_dtype="float32",
      compute_dtype="bfloat16",
      remat_policy="dots",
      attention_impl="cudnn",
      max_segments_per_row=0,
  )
  c.init = dict(kind="orbax" if arg else "fresh", path=arg or "")
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.rules = DEFAULT_RULES
  c.optim = dict(
      lr=2e-5,
      schedule="cosine",
      warmup_steps=50,
      min_lr_ratio=0.1,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.0,
      clip_norm=1.0,
  )
  c.data = dict(path="", seq_len=1024, batch_size=8, seed=0, num_epochs=0, worker_count=0)
  c.checkpoint = dict(every_steps=250, keep=2, async_save=True)
  return c
