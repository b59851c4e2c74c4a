"""The json_schema recogniser without a model: every prefix it accepts completes (with its closing
text) to a document that the `jsonschema` package validates, what breaks the schema is refused at
the character where it does, and unsupported keywords are refused by name."""

import itertools
import json

import jsonschema
import numpy as np
import pytest

from distil_jax.generate.constrain import JsonChooser, TokenTable
from distil_jax.generate.json_schema import SchemaError, SchemaGrammar, compile_schema
from distil_jax.generate.sampling import GREEDY, Sampling

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
NESTED = {
    "type": "object",
    "properties": {
        "tags": {
            "type": "array",
            "items": {"type": "string", "enum": ["a", "bb", "ccc"]},
            "minItems": 2,
            "maxItems": 3,
        },
        "pos": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": ["number", "null"]}},
            "required": ["x"],
        },
        "ok": {"type": "boolean"},
        "k": {"const": 12},
        "any": {},
    },
    "required": ["tags", "pos", "k"],
}
FREE = {"type": "object", "description": "anything"}
ESCAPED = {"type": "object", "properties": {'q"uote': {"enum": [1, -2.5, "x", True, None]}}}
SCHEMAS = [PERSON, NESTED, FREE, {**ESCAPED, "required": ['q"uote']}]
ALPHABET = list('{}[]",:0123456789-.eEtrufalsnxyabcq\\ \n')
ALPHABET += ['"name"', '"age"', '"tags"', '"pos"', '"ok"', '"k"', '"any"', '"q\\"uote"', '"bb"']


def _grammar(schema):
  return SchemaGrammar(compile_schema(schema))


@pytest.mark.parametrize("schema", SCHEMAS)
def test_every_accepted_prefix_completes_to_a_valid_document(schema):
  grammar = _grammar(schema)
  jsonschema.validate(json.loads(grammar.closing(grammar.initial)), schema)
  rng = np.random.default_rng(0)
  for _ in range(300):
    text, state = "", grammar.initial
    for _ in range(60):
      piece = ALPHABET[rng.integers(len(ALPHABET))]
      nxt = grammar.advance(state, piece)
      if nxt is not None:
        text, state = text + piece, nxt
      if grammar.is_complete(state):
        break
    document = text + grammar.closing(state)
    jsonschema.validate(json.loads(document), schema)
    assert grammar.is_complete(grammar.advance(grammar.initial, document)), document


@pytest.mark.parametrize(
    "schema, text",
    [
        (PERSON, '{"nax'),  # not a property
        (PERSON, '{"name":1'),  # a string is expected
        (PERSON, '{"age":1.'),  # an integer has no fraction
        (PERSON, '{"age":1e'),
        (PERSON, '{"age":1}'),  # "name" is required
        (PERSON, '{"age":1,"a'),  # each key once
        (PERSON, '{"age":1,"name":"x",'),  # no key left to add
        (NESTED, '{"tags":["a"]'),  # minItems 2
        (NESTED, '{"tags":["a","a","a",'),  # maxItems 3
        (NESTED, '{"tags":["b"'),  # enum: "bb" or nothing
        (NESTED, '{"tags":[['),
        (NESTED, '{"k":13'),  # const 12
        (NESTED, '{"k":120'),
        (NESTED, '{"pos":{"y":null}'),  # "x" is required
        (NESTED, '{"ok":"'),
        ({"type": "object", "additionalProperties": False}, '{"'),
    ],
)
def test_what_breaks_the_schema_is_refused(schema, text):
  grammar = _grammar(schema)
  assert grammar.advance(grammar.initial, text[:-1]) is not None, "the prefix itself is fine"
  assert grammar.advance(grammar.initial, text) is None


@pytest.mark.parametrize(
    "schema, text",
    [
        (PERSON, '{"age": 30, "name": "Ann"}'),
        (NESTED, '{"k": 12, "tags": ["bb", "ccc"], "pos": {"x": -1.5e3, "y": null}, "any": [1]}'),
        (NESTED, '{"tags":["a","a","a"],"pos":{"x":0},"k":12,"ok":false}'),
        (FREE, '{"x": {"y": [1, "z", null]}}'),
        (ESCAPED, '{"q\\"uote": -2.5}'),
        (ESCAPED, "{}"),
    ],
)
def test_valid_documents_are_accepted(schema, text):
  jsonschema.validate(json.loads(text), schema)
  grammar = _grammar(schema)
  assert grammar.is_complete(grammar.advance(grammar.initial, text))


@pytest.mark.parametrize(
    "schema, path",
    [
        (
            {"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}},
            "properties.a",
        ),
        ({"type": "object", "anyOf": []}, "schema"),
        ({"type": "object", "properties": {"a": {"$ref": "#/x"}}}, "properties.a"),
        ({"type": "object", "required": ["b"]}, "schema"),
        ({"type": "object", "properties": {"a": {"enum": [[1]]}}}, "properties.a"),
        ({"type": "string"}, "schema"),
    ],
)
def test_unsupported_schemas_are_refused_by_name(schema, path):
  with pytest.raises(SchemaError) as e:
    _grammar(schema)
  assert e.value.path.endswith(path)


def test_the_chooser_writes_valid_documents_from_random_logits():
  """Budgets from the minimal document's length up: the reply is complete and valid."""
  chars = [chr(c) for c in range(32, 127)] + ["\n"]
  texts = chars + ["".join(p) for p in itertools.product(chars, repeat=2)] + ['"name"', "true"]
  table = TokenTable.from_texts(texts)
  rng = np.random.default_rng(1)
  for schema in SCHEMAS:
    grammar = _grammar(schema)
    shortest = len(grammar.closing(grammar.initial))
    for max_new in (shortest + 2, shortest + 10, 80):
      for seed, sampling in enumerate([GREEDY, Sampling(temperature=1.0)]):
        chooser = JsonChooser(table, sampling, seed, 0, max_new, grammar)
        tokens = []
        while (token := chooser.choose(rng.normal(0, 3, len(texts)))) is not None:
          tokens.append(token)
        assert len(tokens) <= max_new - 1
        jsonschema.validate(json.loads("".join(texts[t] for t in tokens)), schema)


@pytest.mark.parametrize("schema", [NESTED, {**ESCAPED, "required": ['q"uote']}])
def test_the_literal_prefilter_never_drops_a_valid_token(schema):
  """Where only keys or enum values can follow, the chooser looks only at the tokens
  `literal_mask` finds: every token the recogniser accepts there must be among them."""
  chars = [chr(c) for c in range(32, 127)] + ["\n"]
  texts = chars + ["".join(p) for p in itertools.product(chars, repeat=2)]
  texts += ['"tags"', ' "pos"', '"bb",', "12,", '"q\\"uote":', "-2.5}", "true", "\n  "]
  table = TokenTable.from_texts(texts)
  grammar = _grammar(schema)
  rng = np.random.default_rng(2)
  checked = 0
  for _ in range(20):
    state = grammar.initial
    for _ in range(30):
      literal = grammar.continuations(state)
      if literal is not None:
        mask = table.literal_mask(*literal)
        valid = [i for i, t in enumerate(texts) if grammar.advance(state, t) is not None]
        assert all(mask[i] for i in valid), [texts[i] for i in valid if not mask[i]]
        checked += 1
      options = [t for t in ALPHABET if grammar.advance(state, t) is not None]
      if not options or grammar.is_complete(state):
        break
      state = grammar.advance(state, options[rng.integers(len(options))])
  assert checked > 20
