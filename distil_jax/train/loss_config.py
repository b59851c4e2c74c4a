"""The table from `config.loss.kind` to a typed loss configuration, and frozen-model configs.

A config file declares `c.loss = dict(kind="sft" | "kd" | ..., <that kind's keys>)`; the kind
picks a frozen dataclass here, whose fields are every key that kind accepts (an unknown key is
an error naming the kind's keys), and whose `build(train_cfg)` makes the loss. Enum and dtype
fields are converted from their names here, so no string travels past the config boundary.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from typing import Any

from distil_jax.model.config import parse_dtype


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrozenModelConfig:
  """A model the step reads but never trains (a teacher, a DPO reference)."""

  path: str = ""  # anything `distil_jax.loading.open_model` opens
  dtype: Any = None  # parameter and compute dtype; None keeps the checkpoint's


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTConfig:
  """Cross-entropy on the assistant tokens (no extra keys)."""

  kind: str = "sft"

  def build(self, train_cfg):
    from distil_jax.train.losses import SFTLoss

    return SFTLoss(
        chunk=train_cfg.loss_chunk,
        logits_dtype=train_cfg.loss_logits_dtype,
        positions=train_cfg.loss_positions,
    )


LOSS_CONFIGS: dict[str, type] = {"sft": SFTConfig}


def register(kind: str):
  """Class decorator adding a loss configuration to the table."""

  def add(cls):
    LOSS_CONFIGS[kind] = cls
    return cls

  return add


def _convert(cls, name: str, value):
  hint = typing.get_type_hints(cls)[name]
  if isinstance(hint, type) and issubclass(hint, enum.Enum):
    try:
      return hint(value)
    except ValueError:
      raise ValueError(
          f"config.loss.{name}={value!r}: choose from " f"{[m.value for m in hint]}"
      ) from None
  if name.endswith("dtype") and value is not None:
    return parse_dtype(value)
  if hint is float and isinstance(value, int):
    return float(value)
  if hint is tuple or typing.get_origin(hint) is tuple:
    return tuple(tuple(v) if isinstance(v, list) else v for v in value)
  return value


def loss_config(d: dict):
  """`config.loss` as a dict -> its typed configuration."""
  _import_kinds()
  d = dict(d)
  kind = d.get("kind")
  if kind not in LOSS_CONFIGS:
    raise ValueError(f"config.loss.kind={kind!r}: choose from {sorted(LOSS_CONFIGS)}")
  cls = LOSS_CONFIGS[kind]
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = set(d) - names
  if unknown:
    raise ValueError(
        f"config.loss (kind {kind!r}) has keys it does not take: {sorted(unknown)}; "
        f"it takes {sorted(names)}"
    )
  return cls(**{k: _convert(cls, k, v) for k, v in d.items()})


def frozen_configs(d: dict) -> dict[str, FrozenModelConfig]:
  out = {}
  for name, spec in d.items():
    spec = dict(spec)
    unknown = set(spec) - {"path", "dtype"}
    if unknown:
      raise ValueError(f"config.frozen.{name} has keys it does not take: {sorted(unknown)}")
    dtype = spec.get("dtype") or None
    out[name] = FrozenModelConfig(
        path=spec.get("path", ""), dtype=parse_dtype(dtype) if dtype else None
    )
  return out


def _import_kinds() -> None:
  """Modules that register loss kinds (imported lazily: they import JAX)."""
  import importlib

  for module in ("distil_jax.train.kd", "distil_jax.train.dpo"):
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as e:
      if e.name != module:
        raise
