"""The demo's world: a small instruction domain whose answers a rule can check, from a seed.

Tasks (each answer a few tokens, so sequences fit in 64 tokens with the chat template):
  add      "What is 3 + 4?"                          -> "7"
  mul      "What is 3 * 4?"                          -> "12"
  reverse  "Reverse the letters of the word cat."    -> "tac"
  upper    "Write the word cat in capital letters."  -> "CAT"
  count    "How many letters does the word cat have?" -> "3"
  sort     "Sort these numbers: 3 1 2"               -> "1 2 3"
Some prompts add an IFEval-style formatting constraint, stored in the benchmark's own
`instruction_id_list` / `kwargs` form so `distil_jax.eval`'s checkers score them unchanged:
  lowercase (change_case:english_lowercase, "the answer is 7"), quotes (startend:quotation),
  json (detectable_format:json_format, answer as {"answer": ...}),
  bullet (detectable_format:number_bullet_lists, one "* " bullet),
  end (startend:end_checker, the answer followed by " Done.").
Held-out prompts are drawn from operands never used in training: a prompt's identity is its
(task, operands) pair, and the two sets are disjoint by construction (`split` below), so a held-out
answer cannot be memorised, only computed. `is_correct` is the rule: the answer's content
(formatting removed) equals the reference exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re

TASKS = ("add", "mul", "reverse", "upper", "count", "sort")
FORMATS = ("plain", "lowercase", "quotes", "json", "bullet", "end")
WORDS = (
    "cat",
    "dog",
    "sun",
    "map",
    "red",
    "box",
    "pen",
    "cup",
    "hat",
    "bed",
    "fox",
    "owl",
    "bird",
    "fish",
    "tree",
    "lamp",
    "door",
    "milk",
    "rain",
    "star",
    "moon",
    "frog",
    "cake",
    "ship",
    "gold",
    "wind",
    "leaf",
    "rock",
    "sand",
    "wolf",
    "bell",
    "king",
)
END_PHRASE = "Done."
FORMAT_TEXT = {
    "plain": "",
    "lowercase": " Answer in lowercase words only.",
    "quotes": " Wrap your answer in double quotes.",
    "json": ' Answer in JSON as {"answer": ...}.',
    "bullet": " Answer with one bullet point starting with * .",
    "end": f" End your answer with the phrase {END_PHRASE}",
}
FORMAT_IFEVAL = {
    "plain": ([], []),
    "lowercase": (["change_case:english_lowercase"], [{}]),
    "quotes": (["startend:quotation"], [{}]),
    "json": (["detectable_format:json_format"], [{}]),
    "bullet": (["detectable_format:number_bullet_lists"], [{"num_bullets": 1}]),
    "end": (["startend:end_checker"], [{"end_phrase": END_PHRASE}]),
}


@dataclasses.dataclass(frozen=True)
class Example:
  key: str
  task: str
  fmt: str
  prompt: str
  content: str  # the answer's content, what the rule compares
  answer: str  # the reference answer with its formatting

  def chat(self) -> dict:
    return {
        "key": self.key,
        "messages": [
            {"role": "user", "content": self.prompt},
            {"role": "assistant", "content": self.answer},
        ],
    }

  def ifeval(self) -> dict:
    ids, kwargs = FORMAT_IFEVAL[self.fmt]
    return {
        "key": self.key,
        "prompt": self.prompt,
        "instruction_id_list": ids,
        "kwargs": kwargs,
        "language": "en",
        "task": self.task,
        "format": self.fmt,
        "content": self.content,
    }


def _operands(task: str, rng: random.Random) -> tuple:
  if task in ("add", "mul"):
    return (rng.randint(0, 9), rng.randint(0, 9))
  if task == "sort":
    return tuple(rng.sample(range(10), 3))
  return (rng.choice(WORDS),)


def _question(task: str, ops: tuple) -> tuple[str, str]:
  """(prompt, content) of one task instance."""
  if task == "add":
    return f"What is {ops[0]} + {ops[1]}?", str(ops[0] + ops[1])
  if task == "mul":
    return f"What is {ops[0]} * {ops[1]}?", str(ops[0] * ops[1])
  if task == "sort":
    return f"Sort these numbers: {' '.join(map(str, ops))}.", " ".join(map(str, sorted(ops)))
  word = ops[0]
  if task == "reverse":
    return f"Reverse the letters of the word {word}.", word[::-1]
  if task == "upper":
    return f"Write the word {word} in capital letters.", word.upper()
  return f"How many letters does the word {word} have?", str(len(word))


def _formatted(content: str, fmt: str) -> str:
  if fmt == "lowercase":
    return f"the answer is {content}"
  if fmt == "quotes":
    return f'"{content}"'
  if fmt == "json":
    return json.dumps({"answer": content})
  if fmt == "bullet":
    return f"* {content}"
  if fmt == "end":
    return f"{content} {END_PHRASE}"
  return content


def _split(task: str, ops: tuple) -> str:
  """'heldout' for about one in five operand tuples of each task, else 'train': a pure function of
  the operands, so no held-out (task, operands) pair ever appears in training."""
  h = sum((i + 7) * (int(o) if isinstance(o, int) else sum(map(ord, o))) for i, o in enumerate(ops))
  h = (h * 2654435761 + TASKS.index(task) * 97) % 1000
  return "heldout" if h % 5 == 0 else "train"


def _can_format(task: str, fmt: str) -> bool:
  # An upper-case answer cannot also be lower-case (digit answers get cased words around them).
  return fmt != "lowercase" or task != "upper"


def generate(
    seed: int, n_train: int, n_heldout: int, format_fraction: float = 0.5
) -> tuple[list[Example], list[Example]]:
  """(train, held-out) examples, deterministic in `seed`; every held-out (task, operands) pair is
  unseen in training. Held-out examples are also distinct from each other."""
  rng = random.Random(seed)
  train: list[Example] = []
  heldout: list[Example] = []
  seen_heldout: set = set()
  attempts = 0
  while len(train) < n_train or len(heldout) < n_heldout:
    attempts += 1
    if attempts > 100 * (n_train + n_heldout):
      raise ValueError(f"cannot draw {n_heldout} distinct held-out prompts from the domain")
    task = TASKS[rng.randrange(len(TASKS))]
    ops = _operands(task, rng)
    fmt = "plain"
    if rng.random() < format_fraction:
      fmt = rng.choice([f for f in FORMATS[1:] if _can_format(task, f)])
    question, content = _question(task, ops)
    split = _split(task, ops)
    if split == "heldout":
      if len(heldout) >= n_heldout or (task, ops, fmt) in seen_heldout:
        continue
      seen_heldout.add((task, ops, fmt))
      bucket = heldout
    else:
      if len(train) >= n_train:
        continue
      bucket = train
    key = f"{split}-{len(bucket):05d}"
    bucket.append(
        Example(key, task, fmt, question + FORMAT_TEXT[fmt], content, _formatted(content, fmt))
    )
  return train, heldout


def extract_content(response: str, fmt: str) -> str:
  """The answer's content with the formatting the prompt asked for removed (if present)."""
  body = response.strip()
  if fmt == "json":
    try:
      value = json.loads(body)
      if isinstance(value, dict) and "answer" in value:
        return str(value["answer"]).strip()
    except ValueError:
      pass
  if fmt == "quotes" and len(body) > 1 and body[0] == body[-1] == '"':
    body = body[1:-1].strip()
  if fmt == "bullet":
    body = re.sub(r"^\s*[\*\-]\s+", "", body)
  if fmt == "lowercase" and body.startswith("the answer is "):
    body = body[len("the answer is ") :].strip()
  if fmt == "end" and body.endswith(END_PHRASE):
    body = body[: -len(END_PHRASE)].strip()
  return body


def is_correct(row: dict, response: str) -> bool:
  """The rule: the response's content equals the reference content (case-sensitive: the `upper`
  task is about case; a lowercase constraint only applies to tasks whose answer is lowercase)."""
  return extract_content(response, row["format"]) == row["content"]


def read_jsonl(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str, rows: list[dict]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
  os.replace(tmp, path)
