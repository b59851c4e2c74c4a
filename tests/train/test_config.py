"""Config files: every key declared, typed at the entry point, typos rejected."""

import glob

import jax.numpy as jnp
import pytest

from distil_jax.model.config import AttentionImpl
from distil_jax.train.config import InitKind, Schedule, from_config_dict, load_config


@pytest.mark.parametrize("path", sorted(glob.glob("configs/sft/*.py")))
def test_every_sft_config_becomes_a_typed_train_config(path):
  cfg = from_config_dict(load_config(path))
  assert isinstance(cfg.optim.schedule, Schedule)
  assert isinstance(cfg.model.attention_impl, AttentionImpl)
  assert cfg.model.compute_dtype in (jnp.float32, jnp.bfloat16)
  assert cfg.data.batch_size % cfg.grad_accum == 0


def test_overrides_are_typed_and_a_typo_is_an_error():
  c = load_config(
      "configs/sft/tiny.py",
      [
          "--config.optim.lr=1e-5",
          "--config.model.compute_dtype=bfloat16",
          "--config.mesh.fsdp=2",
          "--config.optim.lr=2",
      ],
  )
  cfg = from_config_dict(c)
  assert cfg.optim.lr == 2.0 and cfg.model.compute_dtype is jnp.bfloat16 and cfg.mesh.fsdp == 2
  with pytest.raises(KeyError, match="lrr"):
    load_config("configs/sft/tiny.py", ["--config.optim.lrr=1e-5"])
  with pytest.raises(TypeError):
    load_config("configs/sft/tiny.py", ["--config.steps=many"])
  with pytest.raises(ValueError, match="dtype"):
    from_config_dict(load_config("configs/sft/tiny.py", ["--config.model.param_dtype=fp33"]))


def test_config_argument_selects_the_hf_init(tmp_path):
  c = load_config(f"configs/sft/qwen2p5_0p5b.py:{tmp_path}")
  assert c.init.kind == "hf" and c.init.path == str(tmp_path)
  assert load_config("configs/sft/qwen2p5_0p5b.py").init.kind == InitKind.FRESH.value


@pytest.mark.parametrize(
    "path", sorted(glob.glob("configs/kd/*.py") + glob.glob("configs/fusion/*.py"))
)
def test_every_distillation_config_builds_its_loss(path):
  """Typed at the entry point: the kind picks the KD loss, enum names became enums, and the
  frozen teacher the loss reads is declared by the file (empty path until the command line)."""
  from distil_jax.train.kd import KDLoss, Source

  cfg = from_config_dict(load_config(path))
  loss = cfg.loss.build(cfg)
  assert isinstance(loss, KDLoss) and isinstance(loss.source, Source)
  assert loss.total_steps == cfg.steps and loss.chunk == cfg.loss_chunk
  for name in loss.frozen_models:
    assert name in cfg.frozen  # --config.frozen.teacher.path=... is accepted
  assert ("topk_ids" in loss.fields()) == (loss.source is Source.OFFLINE)


def test_an_unknown_loss_key_or_kind_is_an_error_naming_it():
  from distil_jax.train.loss_config import loss_config

  with pytest.raises(ValueError, match="alpah"):
    loss_config({"kind": "kd", "alpah": 0.3})
  with pytest.raises(ValueError, match="choose from"):
    loss_config({"kind": "distill"})
  with pytest.raises(ValueError, match="tail"):
    loss_config({"kind": "kd", "tail": "drop"})
