"""Deterministic answers to each curation agent's prompt, as a real teacher might phrase them.

The answer depends only on the request's content, so a rerun gets the same bytes. Answers wrap their
payload in prose and code fences, and a fixed slice of them is cut off with finish_reason "length",
to exercise the parsers' tolerance.
"""

from __future__ import annotations

import hashlib
import json
import re

_AGENT = re.compile(r"curation agent `(\w+)`")
_EVAL_JUDGE = re.compile(r"eval judge `(\w+)`")  # distil_jax.eval.judges' system prompts
_TAG = re.compile(r"<instruction>(.*?)</instruction>", re.S)
_TASK_WORDS = [
    ("math", ("solve", "compute", "sum", "equation", "number", "计算")),
    ("code_generation", ("write a function", "python", "code", "函数")),
    ("code_debugging", ("bug", "fix", "error")),
    ("translation", ("translate", "翻译")),
    ("summarization", ("summarize", "summary", "总结")),
    ("reasoning", ("why", "puzzle", "logic", "为什么")),
]


def _digest(text: str) -> int:
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _last_user(messages: list[dict]) -> str:
  return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def _instruction_in(prompt: str) -> str:
  found = [f.strip() for f in _TAG.findall(prompt) if f.strip()]
  return found[0] if found else prompt


def _classify(prompt: str) -> str:
  text = _instruction_in(prompt).lower()
  for task, words in _TASK_WORDS:
    if any(w in text for w in words):
      return f"Looking at the request, the best fit is:\n<task>{task}</task>"
  return "Category: <task>writing</task> (it asks for prose)."


_THINGS = (
    "prime numbers",
    "binary search",
    "photosynthesis",
    "supply chains",
    "the French revolution",
    "neural networks",
    "tidal forces",
    "compound interest",
    "sorting algorithms",
    "volcanoes",
    "a bakery's budget",
    "graph colouring",
    "the water cycle",
    "unit tests",
    "medieval castles",
)
_ASKS = (
    "Explain step by step how {a} relates to {b}.",
    "Write a short guide comparing {a} with {b}.",
    "Solve a concrete problem that combines {a} and {b}, showing every step.",
    "Give three questions a student might ask about {a}, then answer the hardest using {b}.",
)
_ZH_THINGS = (
    "质数",
    "二分查找",
    "光合作用",
    "供应链",
    "复利",
    "火山",
    "水循环",
    "排序算法",
    "神经网络",
    "潮汐",
)


def _expand(prompt: str, h: int) -> str:
  if "Chinese" in prompt:
    a, b = _ZH_THINGS[h % len(_ZH_THINGS)], _ZH_THINGS[(h // 7) % len(_ZH_THINGS)]
    text = f"请一步一步地解释{a}和{b}之间有什么联系，并举一个具体的例子（第{h % 97}题）。"
  else:
    a, b = _THINGS[h % len(_THINGS)], _THINGS[(h // 13) % len(_THINGS)]
    text = _ASKS[(h // 101) % len(_ASKS)].format(a=a, b=b)
  return f"Here is a new instruction:\n```\n<instruction>{text}</instruction>\n```"


def _judge(prompt: str, h: int) -> str:
  is_student = "STUDENT-ANSWER" in prompt
  score = (h % 3) + (2 if is_student else 6)
  scores = {
      "informativeness": score,
      "helpfulness": score,
      "difficulty": (h % 5) + 3,
      "score": score,
  }
  return "My assessment:\n```json\n" + json.dumps(scores) + "\n```\nThe answer is adequate."


def eval_judge_answer(kind: str, h: int) -> str:
  """`single`: a rating 1 + h % 10; `pairwise`: A, B or C (tie) by h % 3, in judge prose."""
  if kind == "single":
    return f"The answer addresses the question.\nRating: [[{1 + h % 10}]]"
  return f"Both answers were read with care.\nFinal verdict: [[{'ABC'[h % 3]}]]"


def answer(request: dict) -> tuple[str, str]:
  """Returns (content, finish_reason) for a chat-completions request body."""
  messages = request["messages"]
  system = next((m["content"] for m in messages if m["role"] == "system"), "")
  prompt = _last_user(messages)
  h = _digest(json.dumps([messages, request.get("seed")], sort_keys=True))
  judge = _EVAL_JUDGE.search(system)
  if judge:
    return eval_judge_answer(judge.group(1), h), "stop"
  match = _AGENT.search(system)
  agent = match.group(1) if match else "student"
  if agent == "classify":
    return _classify(prompt), "stop"
  if agent in ("expand", "balance_language"):
    return _expand(prompt, h), "stop"
  if agent == "rewrite":
    return (
        f"Rewritten:\n<instruction>{_instruction_in(prompt)} Show your reasoning.</instruction>",
        "stop",
    )
  if agent == "refine":
    body = (
        f"Step 1: restate the problem.\nStep 2: work it out ({h % 1000}).\nFinal answer: {h % 97}."
    )
    if h % 13 == 0:  # the teacher ran out of tokens mid-answer
      return f"<answer>{body[:25]}", "length"
    return f"Sure, here is a refined answer.\n<answer>{body}</answer>\nHope this helps!", "stop"
  if agent == "judge":
    return _judge(prompt, h), "stop"
  if agent == "verify":
    return (
        "<verdict>0</verdict> the final step is wrong."
        if h % 11 == 0
        else "Checked each step.\n<verdict>1</verdict>"
    ), "stop"
  return f"STUDENT-ANSWER {h % 1000}: a short attempt.", "stop"
