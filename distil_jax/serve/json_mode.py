"""JSON mode in the server: the `response_format` field, and the vocabulary's text that the
host-side chooser (`generate/constrain.py`) reads, decoded once per server on first use."""

from __future__ import annotations

import asyncio

from distil_jax.generate import json_grammar
from distil_jax.generate.constrain import JsonChooser, TokenTable
from distil_jax.generate.json_schema import SchemaError, SchemaGrammar, compile_schema
from distil_jax.generate.sampling import Sampling

SCHEMA_FIELDS = {"name", "schema", "strict", "description"}


class FormatError(ValueError):

  def __init__(self, message: str, param: str):
    super().__init__(message)
    self.param = param


def response_format(body: dict, stop: tuple[str, ...], sampling: Sampling):
  """The grammar the reply must follow (None: free text). The settings that would break the
  promise (the reply parses) are refused: a stop string could cut the object, min_tokens would
  block the stop after it."""
  fmt = body.get("response_format")
  if fmt is None:
    return None
  if not isinstance(fmt, dict) or "type" not in fmt:
    raise FormatError("'response_format' must be an object with a 'type'", "response_format")
  kind = fmt["type"]
  if kind not in ("text", "json_object", "json_schema"):
    raise FormatError(
        f"response_format.type {kind!r} is not supported: 'text', 'json_object' or "
        "'json_schema'",
        "response_format.type",
    )
  expected = {"type", "json_schema"} if kind == "json_schema" else {"type"}
  if set(fmt) != expected:
    raise FormatError(
        f"response_format {kind!r} takes the keys {sorted(expected)}, got {sorted(fmt)}",
        "response_format",
    )
  if kind == "text":
    return None
  grammar = json_grammar.OBJECT if kind == "json_object" else _schema(fmt["json_schema"])
  if stop:
    raise FormatError("'stop' cannot be combined with JSON mode", "stop")
  if sampling.min_new_tokens:
    raise FormatError("'min_tokens' cannot be combined with JSON mode", "min_tokens")
  return grammar


def _schema(spec) -> SchemaGrammar:
  if not isinstance(spec, dict) or "schema" not in spec or set(spec) - SCHEMA_FIELDS:
    raise FormatError(
        f"response_format.json_schema must be an object with 'schema' (and optionally "
        f"{sorted(SCHEMA_FIELDS - {'schema'})})",
        "response_format.json_schema",
    )
  try:
    return SchemaGrammar(compile_schema(spec["schema"]))
  except SchemaError as e:
    raise FormatError(
        f"response_format.json_schema.{e}", "response_format.json_schema.schema"
    ) from None


def json_chooser(row) -> JsonChooser | None:
  """The host-side token chooser of a JSON-mode `protocol.Row` (None for free text)."""
  if row.json_table is None:
    return None
  return JsonChooser(
      row.json_table, row.sampling, row.seed, row.salt, row.max_new_tokens, row.json_grammar
  )


class LazyTable:
  """The tokenizer's `TokenTable`, built on first use off the event loop (about a second for
  Qwen2.5's 151,936 tokens), then shared by every JSON-mode row."""

  def __init__(self, tokenizer, vocab_size: int):
    self.tokenizer, self.vocab_size = tokenizer, vocab_size
    self._table: TokenTable | ValueError | None = None
    self._lock: asyncio.Lock | None = None

  async def get(self) -> TokenTable:
    """The table; a tokenizer it cannot serve raises its ValueError, every time, built once."""
    if self._table is None:
      self._lock = self._lock or asyncio.Lock()
      async with self._lock:
        if self._table is None:
          try:
            self._table = await asyncio.get_running_loop().run_in_executor(
                None, TokenTable.from_tokenizer, self.tokenizer, self.vocab_size
            )
          except ValueError as e:
            self._table = e
    if isinstance(self._table, ValueError):
      raise self._table
    return self._table
