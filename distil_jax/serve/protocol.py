"""The OpenAI wire format in: validating request bodies into generation rows.

A request becomes one `Row` per prompt and choice (chat: `n`; completions: `n` per prompt). Every
field is either honoured exactly or refused with a 400 that names it, never accepted and ignored;
every row is checked against the generator's real limits here, before it can join a batch.
"""

from __future__ import annotations

import dataclasses
import math
import secrets

from distil_jax.generate.chat import encode_text
from distil_jax.generate.sampling import Sampling
from distil_jax.serve import json_mode
from distil_jax.serve.tools import ToolError, check_tools, template_tool_calls

MAX_LOGPROBS = 20
MAX_N = 16
MAX_STOP = 32
CHAT_ROLES = ("system", "user", "assistant", "tool")
COMMON_FIELDS = {
    "model",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "n",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "logit_bias",
    "min_tokens",
    "user",
}
CHAT_FIELDS = COMMON_FIELDS | {
    "messages",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt", "echo", "logprobs", "best_of", "suffix"}


class RequestError(ValueError):

  def __init__(
      self, message: str, *, param: str | None = None, status: int = 400, code: str | None = None
  ):
    super().__init__(message)
    self.param, self.status, self.code = param, status, code


@dataclasses.dataclass(frozen=True)
class Defaults:
  """What a request that leaves a setting out gets: the checkpoint's generation_config.json and
  the server's limits. `max_tokens` None: the rest of the context."""

  sampling: Sampling = Sampling(temperature=1.0)
  max_tokens: int | None = None
  max_len: int = 2048


@dataclasses.dataclass(frozen=True)
class Row:
  prompt: list[int]
  max_new_tokens: int
  sampling: Sampling
  seed: int
  salt: int
  num_logprobs: int  # 0: none
  prompt_logprobs: int = 0  # echo: top-k at each prompt token (0: not scored)
  # JSON mode (None: free text): the reply's grammar and the vocabulary's text (set by the server).
  json_grammar: object = dataclasses.field(default=None, repr=False, compare=False)
  json_table: object = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class Job:
  kind: str  # "chat" | "completion"
  model: str
  rows: list[Row]  # prompt-major: rows[p * n + i] is choice i of prompt p
  n: int
  stop: tuple[str, ...]
  logprobs: int | None  # completions: top-k count; chat: top_logprobs (None = no logprobs)
  stream: bool = False
  include_usage: bool = False
  echo: bool = False
  tools: bool = False  # parse <tool_call> blocks out of the replies
  parallel_tool_calls: bool = True  # False: only a reply's first call is returned
  json_mode: bool = False  # response_format json_object / json_schema: rows need a json_table


def _number(body, name, default, kind, lo=None, hi=None):
  value = body.get(name)
  if value is None:
    return default
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  if ok and kind is int:
    ok = float(value).is_integer()
  if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
    bounds = f" in [{lo}, {hi}]" if hi is not None else (f" >= {lo}" if lo is not None else "")
    raise RequestError(
        f"'{name}' must be a{'n integer' if kind is int else ' finite number'}" f"{bounds}",
        param=name,
    )
  return kind(value)


def unencodable_field(value, path: str = "") -> str | None:
  """The path of the first string that is not valid Unicode (a lone surrogate), or None."""
  if isinstance(value, str):
    try:
      value.encode("utf-8")
    except UnicodeEncodeError:
      return path or "body"
  elif isinstance(value, dict):
    for k, v in value.items():
      bad = unencodable_field(k, path) or unencodable_field(v, f"{path}.{k}" if path else str(k))
      if bad:
        return bad
  elif isinstance(value, list):
    for i, v in enumerate(value):
      if bad := unencodable_field(v, f"{path}[{i}]"):
        return bad
  return None


def _sampling(body, defaults: Sampling, vocab: int) -> Sampling:
  top_p = _number(body, "top_p", defaults.top_p, float, 0.0, 1.0)
  if top_p == 0.0:
    raise RequestError("'top_p' must be > 0", param="top_p")
  bias = body.get("logit_bias") or {}
  if not isinstance(bias, dict) or len(bias) > 300:
    raise RequestError("'logit_bias' must map at most 300 token ids to numbers", param="logit_bias")
  pairs = []
  for token, value in bias.items():
    ok = (
        str(token).isdigit()
        and int(token) < vocab
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and -100 <= value <= 100
    )
    if not ok:
      raise RequestError(
          f"'logit_bias': token ids must be in [0, {vocab}) and biases in "
          f"[-100, 100], got {token!r}: {value!r}",
          param="logit_bias",
      )
    pairs.append((int(token), float(value)))
  return Sampling(
      temperature=_number(body, "temperature", defaults.temperature, float, 0.0, 2.0),
      top_k=max(_number(body, "top_k", defaults.top_k, int, -1), 0),
      top_p=top_p,
      repetition_penalty=_number(
          body, "repetition_penalty", defaults.repetition_penalty, float, 0.01, 10.0
      ),
      frequency_penalty=_number(body, "frequency_penalty", 0.0, float, -2.0, 2.0),
      presence_penalty=_number(body, "presence_penalty", 0.0, float, -2.0, 2.0),
      logit_bias=tuple(sorted(pairs)),
      min_new_tokens=_number(body, "min_tokens", 0, int, 0),
  )


def _common(body, allowed, served, strict_model, defaults: Defaults, vocab: int):
  if not isinstance(body, dict):
    raise RequestError("request body must be a JSON object")
  for name in body:
    if name not in allowed:
      raise RequestError(f"'{name}' is not supported by this server", param=name)
  model = body.get("model", served[0])
  if model not in served and not strict_model:
    model = served[0]  # one model per server: any name reaches it, as with llama.cpp
  if model not in served:
    raise RequestError(
        f"The model '{model}' does not exist; this server has {list(served)}",
        param="model",
        status=404,
        code="model_not_found",
    )
  stream = body.get("stream") or False
  if not isinstance(stream, bool):
    raise RequestError("'stream' must be a boolean", param="stream")
  options = body.get("stream_options") or {}
  if not isinstance(options, dict) or set(options) - {"include_usage"} or (options and not stream):
    raise RequestError(
        "'stream_options' takes only include_usage, with stream=true", param="stream_options"
    )
  seed = body.get("seed")
  seed = secrets.randbits(31) if seed is None else _number(body, "seed", 0, int) % (1 << 32)
  stop = body.get("stop")
  if stop is None:
    stop = ()
  elif isinstance(stop, str):
    stop = (stop,) if stop else ()
  elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOP:
    stop = tuple(s for s in stop if s)  # more than OpenAI's 4: harnesses send their whole list
  else:
    raise RequestError(
        f"'stop' must be a string or a list of at most {MAX_STOP} strings", param="stop"
    )
  return dict(
      model=model,
      stream=stream,
      include_usage=bool(options.get("include_usage")),
      seed=seed,
      stop=stop,
      n=_number(body, "n", 1, int, 1, MAX_N),
      sampling=_sampling(body, defaults.sampling, vocab),
  )


def _max_tokens(body, name, prompt, defaults: Defaults, param, minimum=1) -> int:
  room = defaults.max_len - len(prompt)
  if not prompt:
    raise RequestError("the prompt is empty", param=param)
  if body.get(name) is None:  # left out: as much as the context allows, up to the server default
    if room < max(minimum, 1):
      raise RequestError(
          f"This model's maximum context length is {defaults.max_len} tokens and "
          f"the prompt has {len(prompt)}: no room for a completion.",
          param=param,
          code="context_length_exceeded",
      )
    return room if defaults.max_tokens is None else min(room, defaults.max_tokens)
  wanted = _number(body, name, 0, int, minimum)
  if wanted > room:
    raise RequestError(
        f"This model's maximum context length is {defaults.max_len} tokens. However, you requested "
        f"{len(prompt) + wanted} tokens ({len(prompt)} in the prompt, {wanted} for the "
        "completion). Please reduce the prompt or max_tokens.",
        param=param,
        code="context_length_exceeded",
    )
  return wanted


def _messages(messages) -> list[dict]:
  if not isinstance(messages, list) or not messages:
    raise RequestError("'messages' must be a non-empty list", param="messages")
  clean = []
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or m.get("role") not in CHAT_ROLES:
      raise RequestError(f"messages[{i}] needs a role in {CHAT_ROLES}", param="messages")
    content = m.get("content")
    if isinstance(content, list):  # content parts: only text is understood
      if not all(
          isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
          for p in content
      ):
        raise RequestError(
            f"messages[{i}].content: only text parts are supported", param="messages"
        )
      content = "".join(p["text"] for p in content)
    message = {"role": m["role"], "content": content}
    if m["role"] == "assistant" and m.get("tool_calls"):
      message["tool_calls"] = template_tool_calls(m["tool_calls"], i)
      message["content"] = content or ""
    elif not isinstance(content, str):
      raise RequestError(f"messages[{i}].content must be a string", param="messages")
    clean.append(message)
  return clean


def parse_chat(body, tokenizer, served, defaults: Defaults, strict_model=False) -> Job:
  try:
    return _parse_chat(body, tokenizer, served, defaults, strict_model)
  except (ToolError, json_mode.FormatError) as e:
    raise RequestError(str(e), param=e.param) from None


def _parse_chat(body, tokenizer, served, defaults, strict_model) -> Job:
  c = _common(body, CHAT_FIELDS, served, strict_model, defaults, len(tokenizer))
  grammar = json_mode.response_format(body, c["stop"], c["sampling"])
  if body.get("parallel_tool_calls") not in (None, True, False):
    raise RequestError("'parallel_tool_calls' must be a boolean", param="parallel_tool_calls")
  choice = body.get("tool_choice")
  if choice not in (None, "auto", "none"):
    raise RequestError(
        "'tool_choice' may be 'auto' or 'none' (forcing a call needs constrained " "decoding)",
        param="tool_choice",
    )
  tools = check_tools(body["tools"]) if body.get("tools") else None
  if choice == "none":
    tools = None
  if grammar is not None and tools is not None:
    raise RequestError("'tools' cannot be combined with a JSON response_format", param="tools")
  messages = _messages(body.get("messages"))
  text = tokenizer.apply_chat_template(
      messages, tools=tools, tokenize=False, add_generation_prompt=True
  )
  prompt = encode_text(tokenizer, text)
  logprobs = None
  if body.get("logprobs"):
    logprobs = _number(body, "top_logprobs", 0, int, 0, MAX_LOGPROBS)
  elif body.get("top_logprobs") is not None:
    raise RequestError("'top_logprobs' needs logprobs=true", param="top_logprobs")
  name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
  max_tokens = _max_tokens(body, name, prompt, defaults, "messages")
  rows = [
      Row(
          prompt,
          max_tokens,
          c["sampling"],
          c["seed"],
          i,
          0 if logprobs is None else max(logprobs, 1),
          json_grammar=grammar,
      )
      for i in range(c["n"])
  ]
  return Job(
      "chat",
      c["model"],
      rows,
      c["n"],
      c["stop"],
      logprobs,
      c["stream"],
      c["include_usage"],
      tools=tools is not None,
      parallel_tool_calls=body.get("parallel_tool_calls") is not False,
      json_mode=grammar is not None,
  )


def _prompts(prompt, tokenizer) -> list[list[int]]:
  if isinstance(prompt, str):
    return [encode_text(tokenizer, prompt)]
  if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
    return [encode_text(tokenizer, p) for p in prompt]
  is_ids = (
      lambda p: isinstance(p, list)
      and p
      and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
  )
  if is_ids(prompt):
    return [list(prompt)]
  if isinstance(prompt, list) and prompt and all(is_ids(p) for p in prompt):
    return [list(p) for p in prompt]
  raise RequestError("'prompt' must be a string, a list of strings, or token ids", param="prompt")


def parse_completion(body, tokenizer, served, defaults: Defaults, strict_model=False) -> Job:
  c = _common(body, COMPLETION_FIELDS, served, strict_model, defaults, len(tokenizer))
  if body.get("suffix"):
    raise RequestError("'suffix' is not supported (no fill-in-the-middle)", param="suffix")
  best_of = body.get("best_of")
  if best_of is not None and best_of != c["n"]:
    raise RequestError("'best_of' other than n is not supported", param="best_of")
  echo = body.get("echo") or False
  if not isinstance(echo, bool):
    raise RequestError("'echo' must be a boolean", param="echo")
  if echo and c["stream"]:
    raise RequestError("'echo' with stream=true is not supported", param="echo")
  prompts = _prompts(body.get("prompt"), tokenizer)
  vocab = len(tokenizer)
  if any(not 0 <= t < vocab for p in prompts for t in p):
    raise RequestError(f"token ids must be in [0, {vocab})", param="prompt")
  logprobs = body.get("logprobs")
  if logprobs is not None:
    logprobs = _number(body, "logprobs", 0, int, 0, MAX_LOGPROBS)
  rows = []
  for p, prompt in enumerate(prompts):
    max_tokens = _max_tokens(
        body, "max_tokens", prompt, defaults, "prompt", minimum=0 if echo else 1
    )
    for i in range(c["n"]):
      rows.append(
          Row(
              prompt,
              max_tokens,
              c["sampling"],
              c["seed"],
              p * c["n"] + i,
              0 if logprobs is None else max(logprobs, 1),
              prompt_logprobs=max(logprobs, 1) if echo and logprobs is not None else 0,
          )
      )
  return Job(
      "completion",
      c["model"],
      rows,
      c["n"],
      c["stop"],
      logprobs,
      c["stream"],
      c["include_usage"],
      echo=echo,
  )
