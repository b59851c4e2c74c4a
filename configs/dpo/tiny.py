"""DPO of a tiny student (2 layers, hidden 64, the real Qwen2.5 vocabulary) on CPU, from a
checkpoint (an SFT run workdir, an orbax checkpoint or a HF directory).

    distil-jax make-pairs --student /tmp/sft-tiny --input curated/ --output /tmp/pairs \
        --max_new_tokens 64
    distil-jax prepare-pairs --input /tmp/pairs --output /tmp/pairs-tok --max_length 128
    distil-jax ref-logprobs --model /tmp/sft-tiny --pairs /tmp/pairs-tok --output /tmp/pairs-ref
    distil-jax train --config configs/dpo/tiny.py:/tmp/sft-tiny --workdir /tmp/dpo-tiny \
        --config.data.path=/tmp/pairs-tok --config.loss.reference_logprobs=/tmp/pairs-ref
    distil-jax export --model /tmp/dpo-tiny --output /tmp/dpo-tiny-hf

`:ARG` is the checkpoint to start from; it must be the model the reference log-probs were
computed with. `--config.loss.online_reference=True --config.frozen.reference.path=<same>` keeps
the reference in memory instead. Expected (tests/train/test_dpo.py): reward accuracy on the
training pairs climbs above 0.9 within a few dozen steps; metrics.jsonl holds reward_accuracy,
reward_margin, chosen/rejected rewards, log-probs and lengths; running again resumes.
"""

import ml_collections

from distil_jax.sharding import DEFAULT_RULES


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 40
  c.grad_accum = 1
  c.loss_chunk = 64
  c.loss_positions = 0  # >0: the LM head only at each row's first K trained positions
  c.loss_logits_dtype = "float32"
  # The loss table (distil_jax/train/loss_config.py); variants: sigmoid | ipo |
  # length_normalised | simpo (SimPO needs no reference; give it gamma, e.g. 0.5, and beta ~2).
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
  c.frozen = dict(reference=dict(path=arg or "", dtype="float32"))  # read only when online
  c.log_every = 5
  c.model = dict(
      preset="tiny",
      vocab_size=151936,
      param_dtype="float32",
      compute_dtype="float32",
      remat_policy="none",
      attention_impl="xla",
  )
  c.init = dict(kind="orbax" if arg else "fresh", path=arg or "")
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.rules = DEFAULT_RULES
  c.optim = dict(
      lr=1e-3,
      schedule="constant",
      warmup_steps=0,
      min_lr_ratio=1.0,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.0,
      clip_norm=1.0,
  )
  c.data = dict(path="", seq_len=128, batch_size=8, seed=0, num_epochs=0, worker_count=0)
  c.checkpoint = dict(every_steps=20, keep=2, async_save=True)
  return c
