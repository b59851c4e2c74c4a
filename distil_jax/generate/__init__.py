"""Fast generation: jitted prefill and an on-device decode loop over the KV cache, sampling, chat."""

from distil_jax.generate.chat import chat, chat_completions, decode, encode_chat, stop_ids_for
from distil_jax.generate.engine import Completion, Generator, generate
from distil_jax.generate.sampling import GREEDY, Sampling

__all__ = [
    "GREEDY",
    "Completion",
    "Generator",
    "Sampling",
    "chat",
    "chat_completions",
    "decode",
    "encode_chat",
    "generate",
    "stop_ids_for",
]
