"""A recogniser of JSON objects that satisfy a JSON schema (a subset), on top of `json_grammar`.

The state is `(lexical state, frames, text)`: the plain JSON recogniser's state, one frame per open
container (`("o", node, keys seen, node of the key being filled)` or `("a", node, items started)`),
and the raw text of the key or enum value being written (None otherwise). It has the interface of
`json_grammar.OBJECT` (`initial`, `advance`, `closing`, `is_complete`, `lexical`), so the same
host-side chooser drives it, and the same promise: every state it accepts can still be completed,
and `closing` is the shortest completion.

Supported keywords: `type` (a name or a list), `properties`, `required`, `additionalProperties`
(objects with `properties` only ever get those keys; without `properties`, any key unless it is
false), `items`, `minItems`, `maxItems`, `enum` and `const` of scalars (matched as their compact
JSON text), and the annotations `title`, `description`, `default`, `$schema`, `examples`. Anything
else (`$ref`, `anyOf`, `pattern`, `minimum`, ...) is refused by name rather than ignored. The root
must be an object.
"""

from __future__ import annotations

import dataclasses
import functools
import json

from distil_jax.generate import json_grammar as g

TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_ANNOTATIONS = {"title", "description", "default", "$schema", "examples", "$comment"}
_KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "minItems"}
_KEYWORDS |= {"maxItems", "enum", "const"} | _ANNOTATIONS
_STRING_MODES = {g.KEY, g.VAL, g.KEY_ESC, g.VAL_ESC, g.KEY_HEX, g.VAL_HEX}
_IN_VALUE = _STRING_MODES | set(range(g.NUM_MINUS, g.LIT_NULL + 1))
_KIND = {'"': "string", "{": "object", "[": "array", "t": "boolean", "f": "boolean", "n": "null"}


class SchemaError(ValueError):
  """A schema this recogniser cannot honour; `path` names the offending place."""

  def __init__(self, message: str, path: str):
    super().__init__(f"{path}: {message}")
    self.path = path


@dataclasses.dataclass(frozen=True)
class Node:
  types: frozenset | None = None  # None: any JSON value
  enum: tuple[str, ...] | None = None  # the compact JSON texts allowed
  props: tuple[tuple[str, Node], ...] | None = None  # (raw key text, node); None: any key
  required: frozenset = frozenset()
  closed: bool = False  # additionalProperties: false without properties: only {}
  items: Node | None = None
  min_items: int = 0
  max_items: int | None = None

  def prop(self, key: str) -> Node:
    return dict(self.props).get(key, ANY) if self.props is not None else ANY

  def allows(self, kind: str) -> bool:
    if self.types is None:
      return True
    return kind in self.types or (kind == "integer" and "number" in self.types)


ANY = Node()


def _raw(key: str) -> str:
  return json.dumps(key, ensure_ascii=False)[1:-1]


def compile_schema(schema, path: str = "schema") -> Node:
  if not isinstance(schema, dict):
    raise SchemaError("a schema must be an object", path)
  for word in schema:
    if word not in _KEYWORDS:
      raise SchemaError(f"keyword {word!r} is not supported", path)
  types = schema.get("type")
  if types is not None:
    types = [types] if isinstance(types, str) else types
    if not isinstance(types, list) or not types or any(t not in TYPES for t in types):
      raise SchemaError(f"'type' must be one of {TYPES} or a list of them", path)
    types = frozenset(types)
  enum = None
  if "enum" in schema or "const" in schema:
    values = schema["enum"] if "enum" in schema else [schema["const"]]
    if not isinstance(values, list) or not values:
      raise SchemaError("'enum' must be a non-empty list", path)
    if any(isinstance(v, (dict, list)) for v in values):
      raise SchemaError("'enum'/'const' values must be scalars", path)
    enum = tuple(json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in values)
  props, required = None, frozenset()
  if "properties" in schema:
    if not isinstance(schema["properties"], dict):
      raise SchemaError("'properties' must be an object", path)
    props = tuple(
        (_raw(k), compile_schema(v, f"{path}.properties.{k}"))
        for k, v in schema["properties"].items()
    )
  if "required" in schema:
    names = schema["required"]
    known = set(schema.get("properties", {}))
    if not isinstance(names, list) or any(n not in known for n in names):
      raise SchemaError("'required' must list keys of 'properties'", path)
    required = frozenset(_raw(n) for n in names)
  extra = schema.get("additionalProperties", True)
  if not isinstance(extra, bool):
    raise SchemaError("'additionalProperties' must be true or false", path)
  items = compile_schema(schema["items"], f"{path}.items") if "items" in schema else None
  lo, hi = schema.get("minItems", 0), schema.get("maxItems")
  if not isinstance(lo, int) or lo < 0 or (hi is not None and (not isinstance(hi, int) or hi < lo)):
    raise SchemaError("'minItems'/'maxItems' must be integers, 0 <= minItems <= maxItems", path)
  return Node(types, enum, props, required, props is None and not extra, items, lo, hi)


def _expected(frames: tuple, root: Node) -> Node:
  if not frames:
    return root
  top = frames[-1]
  return top[3] if top[0] == "o" else (top[1].items or ANY)


def _unseen(frame) -> list[str] | None:
  """The keys an object frame may still take (None: any key)."""
  node, seen = frame[1], frame[2]
  if node.props is None:
    return [] if node.closed else None
  return [k for k, _ in node.props if k not in seen]


@functools.lru_cache(maxsize=4096)
def _min_value(node: Node) -> str:
  """The shortest JSON text valid for `node`."""
  if node.enum is not None:
    return min(node.enum, key=len)
  if node.types is None:
    return "0"
  options = []
  for kind in sorted(node.types):
    if kind in ("number", "integer"):
      options.append("0")
    elif kind == "string":
      options.append('""')
    elif kind in ("boolean", "null"):
      options.append("true" if kind == "boolean" else "null")
    elif kind == "array":
      items = [_min_value(node.items or ANY)] * node.min_items if node.min_items else []
      options.append("[" + ",".join(items) + "]")
    else:
      members = [f'"{k}":{_min_value(node.prop(k))}' for k in sorted(node.required)]
      options.append("{" + ",".join(members) + "}")
  return min(options, key=len)


class SchemaGrammar:
  """The objects valid under one compiled schema."""

  def __init__(self, root: Node):
    if root.types is not None and "object" not in root.types:
      raise SchemaError("the root must be an object ('type': 'object')", "schema")
    self.root = dataclasses.replace(root, types=frozenset({"object"}), enum=None)
    self.initial = (g.INITIAL, (), None)

  @staticmethod
  def lexical(state):
    return state[0]

  @staticmethod
  def is_complete(state) -> bool:
    return state is not None and g.is_complete(state[0])

  def continuations(self, state) -> tuple[list[str], bool] | None:
    """(the texts one of which must come next, whether blanks may come first), where the schema
    leaves only a few: a known key, or an enum value, in progress or about to start. None
    elsewhere (or once an enum text may already be complete)."""
    lex, frames, text = state
    mode = lex[1]
    if mode in (g.KEY, g.KEY_ESC, g.KEY_HEX):
      keys = _unseen(frames[-1])
      return (
          None
          if keys is None
          else ([k[len(text) :] + '"' for k in keys if k.startswith(text)], False)
      )
    if text is not None:
      ends = [e[len(text) :] for e in _expected(frames, self.root).enum if e.startswith(text)]
      return None if "" in ends else (ends, False)
    if mode in (g.OBJ_OPEN, g.OBJ_KEY):
      keys = _unseen(frames[-1])
      return None if keys is None else (['"' + k + '"' for k in keys] + ["}"], True)
    if mode in (g.VALUE, g.ARR_OPEN) and _expected(frames, self.root).enum is not None:
      return list(_expected(frames, self.root).enum) + ["]"], True
    return None

  def advance(self, state, text: str):
    for ch in text:
      if state is None:
        return None
      state = self.step(state, ch)
    return state

  def step(self, state, ch: str):
    lex, frames, text = state
    new = g.step(lex, ch)
    if new is None:
      return None
    mode, new_mode = lex[1], new[1]
    if mode in (g.KEY, g.KEY_ESC, g.KEY_HEX):  # writing a key: it must lead to an unseen one
      keys = _unseen(frames[-1])
      if new_mode == g.COLON:
        if keys is not None and text not in keys:
          return None
        top = frames[-1]
        frame = ("o", top[1], top[2] | {text}, top[1].prop(text))
        return (new, frames[:-1] + (frame,), None)
      text += ch
      if keys is not None and not any(k.startswith(text) for k in keys):
        return None
      return (new, frames, text)
    if text is not None:  # an enum value: a prefix of one of its texts, or finished
      node = _expected(frames, self.root)
      if any(e.startswith(text + ch) for e in node.enum):
        return (new, frames, text + ch)
      if text not in node.enum or new_mode in _IN_VALUE:
        return None
      text = None
    elif g.NUM_MINUS <= mode <= g.NUM_EXP and ch in ".eE":
      if not _expected(frames, self.root).allows("number"):  # integer only
        return None
    if mode in (g.START, g.VALUE, g.ARR_OPEN) and ch not in " \t\n\r":
      if not (mode == g.ARR_OPEN and ch == "]"):  # a value starts
        return self._value_start(new, frames, ch)
    if mode in (g.OBJ_OPEN, g.OBJ_KEY) and ch == '"':
      keys = _unseen(frames[-1])
      return (new, frames, "") if keys is None or keys else None
    if ch == "," and new_mode in (g.OBJ_KEY, g.VALUE):
      top = frames[-1]
      if top[0] == "o" and _unseen(top) == []:
        return None
      if top[0] == "a" and top[1].max_items is not None and top[2] >= top[1].max_items:
        return None
    if ch in "}]" and len(new[0]) < len(lex[0]):  # a container closes
      top = frames[-1]
      if top[0] == "o" and not top[1].required <= top[2]:
        return None
      if top[0] == "a" and top[2] < top[1].min_items:
        return None
      frames = frames[:-1]
    return (new, frames, text)

  def _value_start(self, new, frames, ch):
    if frames and frames[-1][0] == "a":
      top = frames[-1]
      if top[1].max_items is not None and top[2] >= top[1].max_items:
        return None
      frames = frames[:-1] + (("a", top[1], top[2] + 1),)
    node = _expected(frames, self.root)
    kind = _KIND.get(ch, "integer")
    if not node.allows(kind):
      return None
    if node.enum is not None:
      return (new, frames, ch) if any(e.startswith(ch) for e in node.enum) else None
    if ch == "{":
      frames += (("o", node, frozenset(), None),)
    elif ch == "[":
      frames += (("a", node, 0),)
    return (new, frames, None)

  def closing(self, state) -> str:
    lex, frames, text = state
    mode, out = lex[1], ""
    if mode == g.START:
      return _min_value(self.root)
    if mode in (g.KEY, g.KEY_ESC, g.KEY_HEX):
      top = frames[-1]
      keys = _unseen(top)
      if keys is None:  # any key: finish it lexically, then the shortest value
        out = g.closing(("", mode, lex[2], 0))
      else:
        key = min((k for k in keys if k.startswith(text)), key=lambda k: (len(k), k))
        out = key[len(text) :] + '":' + _min_value(top[1].prop(key))
        frames = frames[:-1] + (("o", top[1], top[2] | {key}, None),)
    elif text is not None:
      out = min((e for e in _expected(frames, self.root).enum if e.startswith(text)), key=len)
      out = out[len(text) :]
    elif mode in _IN_VALUE:
      out = g.closing(("", *lex[1:]))
    elif mode == g.COLON:
      out = ":" + _min_value(frames[-1][3])
    elif mode == g.VALUE and frames[-1][0] == "o":
      out = _min_value(frames[-1][3])
    elif mode == g.VALUE:  # after a comma in an array
      top = frames[-1]
      out, frames = _min_value(top[1].items or ANY), frames[:-1] + (("a", top[1], top[2] + 1),)
    elif mode == g.OBJ_KEY:  # after a comma in an object: one more member
      top = frames[-1]
      keys = _unseen(top)
      key = "" if keys is None else min(keys, key=lambda k: (k not in top[1].required, len(k), k))
      out = f'"{key}":{_min_value(top[1].prop(key))}'
      frames = frames[:-1] + (("o", top[1], top[2] | {key}, None),)
    for frame in reversed(frames):
      if frame[0] == "o":
        missing = sorted(frame[1].required - frame[2])
        members = [f'"{k}":{_min_value(frame[1].prop(k))}' for k in missing]
        out += ("," if members and frame[2] else "") + ",".join(members) + "}"
      else:
        need = max(frame[1].min_items - frame[2], 0)
        items = [_min_value(frame[1].items or ANY)] * need
        out += ("," if need and frame[2] else "") + ",".join(items) + "]"
    return out
