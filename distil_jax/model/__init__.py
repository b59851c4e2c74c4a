"""Qwen2 in Flax NNX."""

from distil_jax.model.cache import KVCache
from distil_jax.model.config import MODEL_SIZES, AttentionImpl, ModelConfig, RematPolicy
from distil_jax.model.factory import abstract_model, create_model
from distil_jax.model.qwen2 import Qwen2, layer_param_specs

__all__ = [
    "KVCache",
    "MODEL_SIZES",
    "AttentionImpl",
    "ModelConfig",
    "RematPolicy",
    "abstract_model",
    "create_model",
    "Qwen2",
    "layer_param_specs",
]
