"""Loads `configs/curate/<name>.py[:arg]` and applies `--config.a.b=value` overrides to its ConfigDict."""

from __future__ import annotations

import importlib.util
import os


def load_config_dict(spec: str):
  """`path.py` or `path.py:arg`; calls the file's `get_config(arg)`."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path} does not exist")
  module_spec = importlib.util.spec_from_file_location(f"_curate_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise AttributeError(f"{path} defines no get_config(arg=None)")
  return module.get_config(arg or None)


def _coerce(current, text: str):
  if isinstance(current, bool):
    if text.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"expected a boolean, got {text!r}")
    return text.lower() in ("true", "1")
  if isinstance(current, (tuple, list)):
    return tuple(part.strip() for part in text.split(",") if part.strip())
  if isinstance(current, (int, float, str)):
    return type(current)(text)
  raise TypeError(f"cannot override a {type(current).__name__} from the command line")


def apply_overrides(config, overrides: list[str]):
  """Each override is `--config.path.to.key=value`; the key must already exist (typo-proof)."""
  for item in overrides:
    if not item.startswith("--config.") or "=" not in item:
      raise ValueError(f"unrecognised argument {item!r}; overrides look like --config.a.b=value")
    dotted, value = item[len("--config.") :].split("=", 1)
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise KeyError(f"--config.{dotted}: no such key in the config")
    with node.unlocked() if hasattr(node, "unlocked") else _nullcontext():
      node[leaf] = _coerce(node[leaf], value)
  return config


class _nullcontext:

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False
