"""Batched generation: greedy equals transformers, rows are independent of their batch, stop ids,
budgets and log-probabilities behave as documented."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import Qwen2ForCausalLM

from distil_jax.generate import GREEDY, Generator, Sampling, generate

PROMPTS = [
    [5, 17, 99, 3, 250, 8, 41],
    [200],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 12, 13, 14, 15, 16, 17, 18, 19],
    [42, 42, 7],
]


def test_greedy_batch_is_token_identical_to_transformers_generate(tiny_hf_dir, tiny_model):
  ours = generate(tiny_model, PROMPTS, max_new_tokens=24)
  hf = Qwen2ForCausalLM.from_pretrained(tiny_hf_dir, torch_dtype=torch.float32).eval()
  for prompt, got in zip(PROMPTS, ours):
    ids = torch.tensor([prompt])  # an explicit mask: HF would otherwise mask token 0 as padding
    ref = hf.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False, pad_token_id=0
    )[0, len(prompt) :].tolist()
    assert got == ref
    assert len(set(got)) > 3, "degenerate output would make this test vacuous"


def test_each_row_is_independent_of_what_it_is_batched_with(tiny_model):
  gen = Generator(tiny_model, min_prompt_bucket=32)  # one prompt bucket: fewer compilations
  sampling = [GREEDY, Sampling(1.0), Sampling(0.8, top_k=20), Sampling(1.2, top_p=0.9)]
  batched = gen.generate(PROMPTS, max_new_tokens=16, sampling=sampling, seed=[1, 2, 3, 4])
  for i in (1, 3):
    solo = gen.generate([PROMPTS[i]], max_new_tokens=16, sampling=sampling[i], seed=[i + 1])
    assert solo[0].tokens == batched[i].tokens


def test_sampling_is_reproducible_per_seed_and_varies_across_seeds(tiny_model):
  gen = Generator(tiny_model)
  run = lambda seed: gen.generate(PROMPTS, max_new_tokens=16, sampling=Sampling(1.0), seed=seed)
  assert [c.tokens for c in run(7)] == [c.tokens for c in run(7)]
  assert [c.tokens for c in run(7)] != [c.tokens for c in run(8)]


def test_top_k_1_and_tiny_top_p_are_greedy(tiny_model):
  gen = Generator(tiny_model)
  greedy = [c.tokens for c in gen.generate(PROMPTS, max_new_tokens=16)]
  for s in (Sampling(1.5, top_k=1), Sampling(1.5, top_p=1e-6)):
    assert [c.tokens for c in gen.generate(PROMPTS, max_new_tokens=16, sampling=s)] == greedy


def test_stop_ids_end_a_row_and_budgets_are_per_row(tiny_model):
  greedy = generate(tiny_model, PROMPTS, max_new_tokens=16)
  stop = greedy[0][5]
  first = greedy[0].index(stop)
  out = Generator(tiny_model, stop_ids=[stop]).generate(PROMPTS, max_new_tokens=[16, 16, 3, 16])
  assert out[0].tokens == greedy[0][:first] and out[0].finish_reason == "stop"
  assert out[2].tokens == greedy[2][:3] or stop in greedy[2][:3]
  for c, g in zip(out, greedy):
    if stop not in g[: len(c.tokens) + 1]:
      assert c.finish_reason == "length"
    assert stop not in c.tokens


def test_logprobs_are_the_models_next_token_distribution(tiny_model):
  [c] = Generator(tiny_model).generate([PROMPTS[0]], max_new_tokens=6, num_logprobs=3)
  ids = jnp.asarray([PROMPTS[0] + c.tokens])
  logp = np.asarray(jax.jit(lambda x: jax.nn.log_softmax(tiny_model(x)[0], axis=-1))(ids))
  for t, token in enumerate(c.tokens):
    row = logp[len(PROMPTS[0]) - 1 + t]
    np.testing.assert_allclose(c.logprobs[t], row[token], atol=1e-4)
    top_ids = [i for i, _ in c.top_logprobs[t]]
    assert top_ids == list(np.argsort(-row)[:3]) and top_ids[0] == token  # greedy


def test_prompt_plus_budget_over_the_context_is_an_error(tiny_model):
  limit = tiny_model.cfg.max_position_embeddings
  with pytest.raises(ValueError, match="exceed"):
    generate(tiny_model, [[1] * (limit - 4)], max_new_tokens=8)
