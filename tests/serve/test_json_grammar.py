"""JSON mode without a model: the character-level recogniser accepts exactly the prefixes of JSON
objects (within its documented bounds), its closing text completes any state, and the host-side
chooser picks tokens as greedy / sampling would among the valid ones, closing the object in time."""

import itertools
import json

import numpy as np
import pytest

from distil_jax.generate import json_grammar as g
from distil_jax.generate.constrain import JsonChooser, TokenTable, _first_allowed
from distil_jax.generate.sampling import GREEDY, Sampling

VALID = [
    '{}',
    '{"a": 1}',
    '{"a":[1,-0.5e+3,2E-7,0,0.25,true,false,null,{}]}',
    '{"s": "tab\\t quote\\" slash\\/ back\\\\ \\u00e9\\uD83D\\uDE00 é 日本 🎉"}',
    '{"nested": {"x": [[], [[{}]], {"y": {"z": [1, [2, [3]]]}}]}}',
    '{\n  "pretty": [\n    1,\n    2\n  ],\n\t"k": "v"\n}',
    '{"a" : 1 , "b" :2}',
    '{"": ""}',
]
INVALID = [
    '[1]',  # json_object: the top level is an object
    ' {}',  # no blank before the object
    '{"a":01}',
    '{"a":1.}',
    '{"a":.5}',
    '{"a":-}',
    '{"a":1e}',
    '{"a":+1}',
    '{"a" 1}',
    '{"a":1,}',
    '{,}',
    '{"a":tru}',
    '{"a":True}',
    '{"a":nul }',
    '{a:1}',
    "{'a':1}",
    '{"a":"x\ny"}',  # a raw newline inside a string
    '{"a":"\\x"}',
    '{"a":"\\u12g4"}',
    '{"a":1]',
    '{"a":[1}',
    '{}}',
    '{} ',  # nothing after the object
    '{  }',  # whitespace: "", one space, or a newline and at most 20 spaces/tabs
    '{\n\n}',
    '{\t}',
    '{\n' + ' ' * 21 + '}',
]


@pytest.mark.parametrize('text', VALID)
def test_valid_objects_are_accepted_at_every_prefix_and_complete_at_the_end(text):
  assert json.loads(text) is not None  # the list itself is right
  state = g.INITIAL
  for i, ch in enumerate(text):
    assert not g.is_complete(state), text[:i]
    state = g.step(state, ch)
    assert state is not None, f'refused {text[: i + 1]!r}'
    # Every prefix can be completed: its closing text makes a document json accepts.
    assert isinstance(json.loads(text[: i + 1] + g.closing(state)), dict), text[: i + 1]
  assert g.is_complete(state) and g.closing(state) == ''


@pytest.mark.parametrize('text', INVALID)
def test_invalid_texts_are_refused(text):
  assert g.advance(g.INITIAL, text) is None


def test_depth_is_bounded():
  deep = '{"a":' + '[' * (g.MAX_DEPTH - 1)
  assert g.advance(g.INITIAL, deep) is not None
  assert g.advance(g.INITIAL, deep + '[') is None


def test_every_state_the_recogniser_reaches_is_a_prefix_of_valid_json():
  """Random walks over single characters: every accepted prefix plus its closing text parses,
  and the closing text is as short as claimed (each of its characters is needed)."""
  rng = np.random.default_rng(0)
  alphabet = list('{}[]",:0123456789-+.eEtrufalsn \n\\u"abc')
  for _ in range(300):
    text, state = '', g.INITIAL
    for _ in range(40):
      ch = alphabet[rng.integers(len(alphabet))]
      nxt = g.step(state, ch)
      if nxt is not None:
        text, state = text + ch, nxt
      if g.is_complete(state):
        break
    assert isinstance(json.loads(text + g.closing(state)), dict), text


def _vocabulary():
  """Every printable ASCII character and pair, some blank-led and longer tokens, unusable ones."""
  chars = [chr(c) for c in range(32, 127)] + ['\n', '\t']
  texts = chars + [''.join(p) for p in itertools.product(chars, repeat=2)]
  texts += [' {', ' "', '\n  ', '\n    }', '{"', '":', '": "', 'true', 'null', 'é', '日本', '']
  return TokenTable.from_texts(texts)


def test_the_first_character_prefilter_never_drops_a_valid_token():
  table = _vocabulary()
  prefixes = ['', '{', '{"a', '{"a\\', '{"a\\u0', '{"a"', '{"a":', '{"a":-', '{"a":0', '{"a":12']
  prefixes += ['{"a":1.', '{"a":1.5', '{"a":1e', '{"a":1e-', '{"a":1e5', '{"a":t', '{"a":fa']
  prefixes += ['{"a":[', '{"a":[1', '{"a":[1,', '{"a":1,', '{ ', '{\n ', '{}']
  for prefix in prefixes:
    state = g.advance(g.INITIAL, prefix)
    allowed = _first_allowed(state[1], state[2])
    if allowed is None:
      continue
    mask = allowed[table.first_V]
    for i, text in enumerate(table.texts):
      if text and g.advance(state, text) is not None:
        assert mask[i], (prefix, text)


def _run(chooser, logits_fn, steps=200):
  tokens = []
  for _ in range(steps):
    token = chooser.choose(logits_fn())
    if token is None:
      return tokens, True
    tokens.append(token)
  return tokens, False


def test_greedy_takes_the_most_likely_valid_token():
  table = _vocabulary()
  logits = np.zeros(len(table.texts), np.float32)
  ids = table.ids_by_text
  logits[ids['x'][0]], logits[ids['{"'][0]], logits[ids['{'][0]] = 9.0, 5.0, 4.0
  chooser = JsonChooser(table, GREEDY, 0, 0, max_new=50)
  assert chooser.choose(logits) == ids['{"'][0]  # "x" is the best token but cannot start
  assert chooser.choose(logits) == ids['x'][0]  # inside the key "x" is fine


@pytest.mark.parametrize('max_new', [3, 4, 5, 8, 13, 40])
def test_random_logits_always_close_the_object_within_the_budget(max_new):
  """With the stop step counted, `max_new >= 3` always ends on a complete object."""
  table = _vocabulary()
  rng = np.random.default_rng(max_new)
  for seed, sampling in enumerate([GREEDY, Sampling(temperature=1.0), Sampling(1.5, 5, 0.9)]):
    chooser = JsonChooser(table, sampling, seed, 0, max_new)
    tokens, stopped = _run(chooser, lambda: rng.normal(0, 3, len(table.texts)), max_new)
    assert stopped and len(tokens) <= max_new - 1
    assert isinstance(json.loads(''.join(table.texts[t] for t in tokens)), dict)


def test_sampling_draws_from_the_distribution_restricted_to_valid_tokens():
  """Right after "{", only '"', "}" and blank-led tokens may come: the sampled frequencies follow
  softmax(logits / T) renormalised over them (a chi-square-sized tolerance over 4000 draws)."""
  table = TokenTable.from_texts(['{', '"', '}', 'x', ']', ' ', 'a'])
  logits = np.array([0.0, 1.0, 0.5, 3.0, 2.0, -0.5, 1.5], np.float32)
  valid = [1, 2, 5]
  expected = np.exp(logits[valid] / 0.8)
  expected /= expected.sum()
  counts = np.zeros(len(valid))
  for seed in range(4000):
    chooser = JsonChooser(table, Sampling(temperature=0.8), seed, 0, max_new=50)
    chooser.choose(logits)  # "{" is the only possible first token
    counts[valid.index(chooser.choose(logits))] += 1
  np.testing.assert_allclose(counts / 4000, expected, atol=0.025)


def test_a_seed_gives_the_same_sample_and_top_k_is_honoured():
  table = _vocabulary()
  logits = np.random.default_rng(1).normal(0, 2, len(table.texts)).astype(np.float32)
  draw = lambda seed, s: _run(JsonChooser(table, s, seed, 0, 30), lambda: logits)[0]
  s = Sampling(temperature=1.0)
  assert draw(3, s) == draw(3, s) and draw(3, s) != draw(4, s)
  # top_k=1 samples only the best token whenever the best is valid: the greedy answer.
  assert draw(5, Sampling(temperature=1.0, top_k=1)) == draw(0, GREEDY)


def test_a_vocabulary_whose_token_texts_depend_on_neighbours_is_refused():
  """SentencePiece-style "▁" tokens decode differently alone and in a sequence: JSON mode
  could not follow the text, so building the table fails with a clear error."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  probe = '{"a b": [1, -0.5e+3, true, null], "s": "x\\"y z"}'
  chars = sorted(set(probe.replace(' ', '')) | {'▁', '<unk>'})
  tokenizer = Tokenizer(models.BPE({c: i for i, c in enumerate(chars)}, [], unk_token='<unk>'))
  tokenizer.pre_tokenizer, tokenizer.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
  fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token='<unk>')
  assert fast.decode(fast(probe)['input_ids']) == probe  # a working tokenizer otherwise
  with pytest.raises(ValueError, match='byte-level'):
    TokenTable.from_tokenizer(fast, len(fast))
