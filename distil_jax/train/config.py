"""The frozen, typed train configuration, and the one place a ConfigDict becomes it.

Past `from_config_dict` nothing reads a ConfigDict, a dtype name or an enum string.
"""

from __future__ import annotations

import dataclasses
import logging
import enum
from typing import Any

import jax.numpy as jnp

from distil_jax.model.config import AttentionImpl, ModelConfig, RematPolicy, parse_dtype
from distil_jax.sharding import DEFAULT_RULES, MeshConfig, Rules


class Schedule(enum.Enum):
  COSINE = "cosine"  # linear warm-up, then cosine decay to lr * min_lr_ratio
  CONSTANT = "constant"  # linear warm-up, then flat


class InitKind(enum.Enum):
  FRESH = "fresh"  # random init from the seed
  # Both open `init.path` with `distil_jax.loading.open_model`, whatever it holds (HF directory,
  # model checkpoint, training run); the names say what a config expects to find there.
  HF = "hf"
  ORBAX = "orbax"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
  lr: float = 3e-4
  schedule: Schedule = Schedule.COSINE
  warmup_steps: int = 0
  min_lr_ratio: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.0
  clip_norm: float = 1.0  # global-norm clip; 0 disables


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
  path: str = ""  # a directory written by `distil-jax prepare`
  teacher_store: str = ""  # offline KD: a directory written by `distil-jax teacher-logits`
  seq_len: int = 2048
  batch_size: int = 8  # global, in packed rows
  seed: int = 0  # shuffle seed
  num_epochs: int = 0  # 0 = repeat forever
  worker_count: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class InitConfig:
  kind: InitKind = InitKind.FRESH
  path: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
  every_steps: int = 500
  keep: int = 3
  async_save: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
  model: ModelConfig
  mesh: MeshConfig = MeshConfig()
  rules: Rules = DEFAULT_RULES
  optim: OptimConfig = OptimConfig()
  data: DataConfig = DataConfig()
  init: InitConfig = InitConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()
  steps: int = 1000
  grad_accum: int = 1  # micro-batches per step; batch_size must divide by it
  loss_chunk: int = 512  # sequence positions per cross-entropy chunk
  # The LM head's output dtype. float32 is exact; bfloat16 (what torch autocast gives) halves the
  # memory traffic of the [batch, chunk, vocab] logits; the softmax is float32 either way.
  loss_logits_dtype: Any = jnp.float32
  # >0: the LM head (and the softmax, the loss) only at each row's first K trained positions; a
  # batch with a row of more is refused before its step. 0: every position. The LM head is
  # nearly all of a small model's work, and chat rows train on few of their positions.
  loss_positions: int = 0
  seed: int = 0  # parameter init and per-step rngs
  log_every: int = 10
  # The loss (`config.loss.kind` picks a typed configuration from `loss_config.LOSS_CONFIGS`)
  # and the frozen models it reads (a teacher, a DPO reference), by name.
  loss: Any = None
  frozen: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.loss is None:
      from distil_jax.train.loss_config import SFTConfig

      object.__setattr__(self, "loss", SFTConfig())
    if self.data.batch_size % self.grad_accum:
      raise ValueError(
          f"data.batch_size={self.data.batch_size} does not divide into "
          f"grad_accum={self.grad_accum} micro-batches"
      )


RUNTIME_FIELDS = (
    "param_dtype",
    "compute_dtype",
    "attention_impl",
    "remat_policy",
    "max_segments_per_row",
)


def _model_config(model: dict[str, Any], init: InitConfig) -> ModelConfig:
  """`preset` names a size (or, for an HF init, is read from its config.json); every other
  key overrides one ModelConfig field."""
  model = dict(model)
  preset = model.pop("preset")
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = set(model) - fields
  if unknown:
    raise ValueError(f"config.model has keys ModelConfig does not: {sorted(unknown)}")
  kw = {k: v for k, v in model.items() if v is not None}
  for key in ("param_dtype", "compute_dtype"):
    if key in kw:
      kw[key] = parse_dtype(kw[key])
  if "attention_impl" in kw:
    kw["attention_impl"] = AttentionImpl(kw["attention_impl"])
  if "remat_policy" in kw:
    kw["remat_policy"] = RematPolicy(kw["remat_policy"])
  if init.kind is not InitKind.FRESH:
    # The checkpoint fixes the architecture; the config chooses only how it runs.
    from distil_jax.loading import model_config_at

    runtime = {k: v for k, v in kw.items() if k in RUNTIME_FIELDS}
    cfg = model_config_at(init.path, **runtime)
    ignored = {k: v for k, v in kw.items() if k not in RUNTIME_FIELDS and getattr(cfg, k) != v}
    if ignored:
      logging.warning(
          "config.model %s ignored: the checkpoint at %s fixes the architecture", ignored, init.path
      )
    return cfg
  return ModelConfig.by_name(preset, **kw)


def _rules(rules) -> Rules:
  return tuple(
      (str(name), tuple(axes) if isinstance(axes, (list, tuple)) else axes) for name, axes in rules
  )


def from_config_dict(c) -> TrainConfig:
  """A (locked) ml-collections ConfigDict, as the config files declare it -> TrainConfig."""
  from distil_jax.train.loss_config import frozen_configs, loss_config

  d = c.to_dict()
  init = InitConfig(kind=InitKind(d["init"]["kind"]), path=d["init"]["path"])
  optim = dict(d["optim"])
  optim["schedule"] = Schedule(optim["schedule"])
  return TrainConfig(
      model=_model_config(d["model"], init),
      mesh=MeshConfig(**d["mesh"]),
      rules=_rules(d["rules"]),
      optim=OptimConfig(**optim),
      data=DataConfig(**d["data"]),
      init=init,
      checkpoint=CheckpointConfig(**d["checkpoint"]),
      loss_logits_dtype=parse_dtype(d["loss_logits_dtype"]),
      loss=loss_config(d["loss"]),
      frozen=frozen_configs(d["frozen"]),
      loss_positions=d.get("loss_positions", 0),  # config files from before it keep working
      **{k: d[k] for k in ("steps", "grad_accum", "loss_chunk", "seed", "log_every")},
  )


def load_config(path: str, overrides: list[str] = ()):
  """Load `configs/<stage>/<name>.py[:arg]` and apply `--config.a.b=value` overrides.

  The ConfigDict is locked, so an override naming a key the file never declared is an error.
  """
  import importlib.util
  import ml_collections

  path, _, arg = path.partition(":")
  spec = importlib.util.spec_from_file_location("_distil_jax_config", path)
  if spec is None:
    raise FileNotFoundError(f"no config file at {path!r}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(arg or None)
  c.lock()
  for item in overrides:
    if not item.startswith("--config."):
      raise ValueError(
          f"unrecognised argument {item!r}; overrides look like --config.optim.lr=1e-5"
      )
    key, eq, value = item[len("--config.") :].partition("=")
    if not eq:
      raise ValueError(f"override {item!r} has no '=value'")
    _override(c, key, value)
  return c


def _override(c, dotted: str, text: str) -> None:
  import ast

  *parents, leaf = dotted.split(".")
  node = c
  for p in parents:
    node = getattr(node, p)  # AttributeError names the missing key
  if leaf not in node:
    raise KeyError(
        f"--config.{dotted}: the config declares no key {leaf!r} "
        f"(has: {', '.join(sorted(node.keys()))})"
    )
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text  # a bare string such as bfloat16 or cosine
  current = node[leaf]
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(current, str) and not isinstance(value, str):
    value = text
  node[leaf] = value  # ml_collections checks the type against the declared one
