"""AdamW with a warm-up + cosine (or constant) schedule and global-norm clipping."""

from __future__ import annotations

import optax

from distil_jax.train.config import OptimConfig, Schedule


def lr_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
  """The rate of update number `count` (0-based): warm-up reaches `lr` at update `warmup_steps`,
  so the first update already moves (a schedule starting at 0 would waste it)."""
  base = _base_schedule(cfg, total_steps)
  return lambda count: base(count + 1)


def _base_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
  warmup = max(cfg.warmup_steps, 0)
  if cfg.schedule is Schedule.CONSTANT:
    if not warmup:
      return optax.constant_schedule(cfg.lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.lr, warmup), optax.constant_schedule(cfg.lr)], [warmup]
    )
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=cfg.lr,
      warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=cfg.lr * cfg.min_lr_ratio,
  )


def make_optimizer(
    cfg: OptimConfig, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The transformation and its schedule (the schedule is also logged as `lr`)."""
  schedule = lr_schedule(cfg, total_steps)
  adamw = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
  if cfg.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw), schedule
  return adamw, schedule
