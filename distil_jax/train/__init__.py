"""Training: frozen configs, optimizer, losses, the pure train step, checkpoints, the loop."""

from distil_jax.train.config import TrainConfig, from_config_dict, load_config
from distil_jax.train.loop import TrainResult, train
from distil_jax.train.losses import NaiveSFTLoss, SFTLoss, chunked_cross_entropy
from distil_jax.train.metrics import NonFiniteError
from distil_jax.train.step import TrainState, train_step

__all__ = [
    "TrainConfig",
    "from_config_dict",
    "load_config",
    "TrainResult",
    "train",
    "NaiveSFTLoss",
    "SFTLoss",
    "chunked_cross_entropy",
    "NonFiniteError",
    "TrainState",
    "train_step",
]
