"""A character-level recogniser of JSON objects, for constrained decoding.

The state is a small immutable tuple `(stack, mode, count, ws)`; `advance(state, text)` returns the
state after `text`, or None when `text` cannot continue a JSON object. Every state it returns is a
prefix of some valid document, and `closing(state)` is the shortest text that completes it, so a
decoder that keeps `len(closing(state))` within its remaining budget always ends on valid JSON.

The language is RFC 8259 with the top level an object (`{...}`, what OpenAI's json_object promises)
and three bounds that make any model, even a random one, terminate and stay readable:
  * whitespace between tokens is "", one space, or a newline followed by at most 20 spaces or tabs
    (llama.cpp's json.gbnf rule): enough for pretty-printing, never an endless run;
  * containers nest at most `MAX_DEPTH` deep;
  * inside strings, control characters (U+0000-U+001F) are refused, as JSON requires.
"""

from __future__ import annotations

MAX_DEPTH = 16
MAX_INDENT = 20

# Modes. Outside strings (whitespace allowed): what may come next.
START, OBJ_OPEN, OBJ_KEY, COLON, VALUE, ARR_OPEN, AFTER_VALUE, DONE = range(8)
# Strings: KEY/VAL differ only in what follows the closing quote; count = hex digits seen.
KEY, VAL, KEY_ESC, VAL_ESC, KEY_HEX, VAL_HEX = range(8, 14)
# Numbers: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
NUM_MINUS, NUM_ZERO, NUM_INT, NUM_DOT, NUM_FRAC, NUM_E, NUM_ESIGN, NUM_EXP = range(14, 22)
# Literals: count = characters matched so far.
LIT_TRUE, LIT_FALSE, LIT_NULL = range(22, 25)

_LITERALS = {LIT_TRUE: "true", LIT_FALSE: "false", LIT_NULL: "null"}
_LITERAL_START = {"t": LIT_TRUE, "f": LIT_FALSE, "n": LIT_NULL}
_NUMBER_ENDS = frozenset({NUM_ZERO, NUM_INT, NUM_FRAC, NUM_EXP})
_WS_MODES = frozenset({OBJ_OPEN, OBJ_KEY, COLON, VALUE, ARR_OPEN, AFTER_VALUE})
_ESCAPES = frozenset('"\\/bfnrt')
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")

State = tuple  # (stack: str of "o"/"a", mode: int, count: int, ws: int)
INITIAL: State = ("", START, 0, 0)


def _value_start(stack: str, ch: str) -> State | None:
  """The state after the first character of a value (the caller is in VALUE or ARR_OPEN)."""
  if ch == '"':
    return (stack, VAL, 0, 0)
  if ch in "{[":
    if len(stack) >= MAX_DEPTH:
      return None
    return (stack + ("o" if ch == "{" else "a"), OBJ_OPEN if ch == "{" else ARR_OPEN, 0, 0)
  if ch == "-":
    return (stack, NUM_MINUS, 0, 0)
  if ch == "0":
    return (stack, NUM_ZERO, 0, 0)
  if ch in _DIGITS:
    return (stack, NUM_INT, 0, 0)
  if ch in _LITERAL_START:
    return (stack, _LITERAL_START[ch], 1, 0)
  return None


def _close(stack: str, ch: str) -> State | None:
  if not stack or ch != ("}" if stack[-1] == "o" else "]"):
    return None
  stack = stack[:-1]
  return (stack, AFTER_VALUE if stack else DONE, 0, 0)


def _whitespace(state: State, ch: str) -> State | None:
  """ws := "" | " " | "\\n" [ \\t]{0,20}. `ws` is 0 (none yet), -1 (one space: no more), or
  1 + the number of spaces/tabs after the newline."""
  stack, mode, count, ws = state
  if ws == 0 and ch in " \n":
    return (stack, mode, count, -1 if ch == " " else 1)
  if ws > 0 and ch in " \t" and ws <= MAX_INDENT:
    return (stack, mode, count, ws + 1)
  return None


def step(state: State, ch: str) -> State | None:
  """The state after one character, or None if it cannot continue a JSON object."""
  stack, mode, count, ws = state
  if mode in (KEY, VAL):
    if ch == '"':
      return (stack, COLON, 0, 0) if mode == KEY else (stack, AFTER_VALUE, 0, 0)
    if ch == "\\":
      return (stack, mode + 2, 0, 0)
    return state if ch >= " " else None
  if mode in (KEY_ESC, VAL_ESC):
    if ch == "u":
      return (stack, mode + 2, 0, 0)
    return (stack, mode - 2, 0, 0) if ch in _ESCAPES else None
  if mode in (KEY_HEX, VAL_HEX):
    if ch not in _HEX:
      return None
    return (stack, mode - 4, 0, 0) if count == 3 else (stack, mode, count + 1, 0)
  if mode in _LITERALS:
    word = _LITERALS[mode]
    if ch != word[count]:
      return None
    return (stack, AFTER_VALUE, 0, 0) if count + 1 == len(word) else (stack, mode, count + 1, 0)
  if mode >= NUM_MINUS:
    return _number(state, ch)
  if ch in " \t\n\r":
    return _whitespace(state, ch) if mode in _WS_MODES else None
  if mode == START:
    return ("o", OBJ_OPEN, 0, 0) if ch == "{" else None
  if mode in (OBJ_OPEN, OBJ_KEY):
    if ch == '"':
      return (stack, KEY, 0, 0)
    return _close(stack, ch) if mode == OBJ_OPEN else None
  if mode == COLON:
    return (stack, VALUE, 0, 0) if ch == ":" else None
  if mode in (VALUE, ARR_OPEN):
    if mode == ARR_OPEN and ch == "]":
      return _close(stack, ch)
    return _value_start(stack, ch)
  if mode == AFTER_VALUE:
    if ch == ",":
      return (stack, OBJ_KEY if stack[-1] == "o" else VALUE, 0, 0)
    return _close(stack, ch)
  return None  # DONE: nothing may follow


def _number(state: State, ch: str) -> State | None:
  stack, mode, _, _ = state
  if ch in _DIGITS:
    follow = {
        NUM_MINUS: NUM_ZERO if ch == "0" else NUM_INT,
        NUM_INT: NUM_INT,
        NUM_DOT: NUM_FRAC,
        NUM_FRAC: NUM_FRAC,
        NUM_E: NUM_EXP,
        NUM_ESIGN: NUM_EXP,
        NUM_EXP: NUM_EXP,
    }.get(mode)
    return None if follow is None else (stack, follow, 0, 0)
  if ch == "." and mode in (NUM_ZERO, NUM_INT):
    return (stack, NUM_DOT, 0, 0)
  if ch in "eE" and mode in (NUM_ZERO, NUM_INT, NUM_FRAC):
    return (stack, NUM_E, 0, 0)
  if ch in "+-" and mode == NUM_E:
    return (stack, NUM_ESIGN, 0, 0)
  if mode in _NUMBER_ENDS:  # the number is complete: the character belongs to what follows
    return step((stack, AFTER_VALUE, 0, 0), ch)
  return None


def advance(state: State | None, text: str) -> State | None:
  for ch in text:
    if state is None:
      return None
    state = step(state, ch)
  return state


def is_complete(state: State | None) -> bool:
  return state is not None and state[1] == DONE


def closing(state: State) -> str:
  """The shortest text that turns `state` into a complete object (each character of it is a
  single token in a byte-level vocabulary, so its length bounds the tokens needed to close)."""
  stack, mode, count, _ = state
  if mode == START:
    return "{}"
  if mode in (KEY_HEX, VAL_HEX):
    head, mode = "0" * (4 - count), mode - 4
  elif mode in (KEY_ESC, VAL_ESC):
    head, mode = "n", mode - 2
  else:
    head = ""
  if mode == KEY:
    head += '":0'
  elif mode == VAL:
    head += '"'
  elif mode in _LITERALS:
    head += _LITERALS[mode][count:]
  elif mode in (NUM_MINUS, NUM_DOT, NUM_E, NUM_ESIGN):
    head += "0"
  elif mode == OBJ_KEY:
    head += '"":0'
  elif mode == COLON:
    head += ":0"
  elif mode == VALUE:
    head += "0"
  return head + "".join("}" if c == "o" else "]" for c in reversed(stack))


class _Object:
  """Any JSON object, with the interface `constrain.JsonChooser` drives (`json_schema` has it too)."""

  initial = INITIAL
  advance = staticmethod(advance)
  closing = staticmethod(closing)
  is_complete = staticmethod(is_complete)
  lexical = staticmethod(lambda state: state)
  continuations = staticmethod(lambda state: None)  # no literal the text must go on with


OBJECT = _Object()
