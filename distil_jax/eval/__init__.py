"""Evaluation: IFEval-style instruction following, judges, perplexity and speed.

Nothing here imports JAX at import time; the in-process answer source and perplexity do, lazily.
"""

from distil_jax.eval.ifeval import Prompt, aggregate, loose_variants, read_prompts
from distil_jax.eval.instructions import CHECKERS, Instruction, make_instruction

__all__ = [
    "CHECKERS",
    "Instruction",
    "Prompt",
    "aggregate",
    "loose_variants",
    "make_instruction",
    "read_prompts",
]
