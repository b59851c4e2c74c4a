"""The curation record, its lineage, the seed JSONL reader and the output JSON form.

Seeds are one JSON object per line, either `{"instruction", "input"?, "output"?}` (Alpaca style) or
`{"messages": [system?, user, assistant?]}` (OpenAI chat style). A bad line raises with file:line.
"""

from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass(frozen=True)
class Record:
  id: str
  instruction: str
  response: str  # "" until a teacher answers
  system: str = ""
  task: str = ""
  language: str = ""
  source: str = "seed"  # seed | expansion | language_balance
  parents: tuple[str, ...] = ()
  agents: tuple[str, ...] = ()  # agents that touched it, in order
  scores: tuple[tuple[str, float], ...] = ()
  student_response: str = ""  # the student's answer the judge compared (for preference pairs)
  # The teacher's chat log-probs of `response`, one entry per answer token, given exactly this
  # record's conversation (`refine` with top_logprobs > 0; see `Completion.logprobs`).
  teacher_logprobs: tuple[dict, ...] | None = None

  def touched_by(self, agent: str, **changes) -> "Record":
    """This record with `changes`, `agent` appended to its lineage. Changing the conversation
    drops `teacher_logprobs` (they were computed on the old one) unless new ones are given."""
    if "teacher_logprobs" not in changes and {"system", "instruction", "response"} & set(changes):
      changes["teacher_logprobs"] = None
    return dataclasses.replace(self, agents=self.agents + (agent,), **changes)

  def with_scores(self, **scores: float) -> "Record":
    return dataclasses.replace(self, scores=self.scores + tuple(sorted(scores.items())))

  def to_json(self) -> dict:
    messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
        {"role": "user", "content": self.instruction},
        {"role": "assistant", "content": self.response},
    ]
    lineage = {
        "source": self.source,
        "parents": list(self.parents),
        "agents": list(self.agents),
        "scores": dict(self.scores),
        "task": self.task,
        "language": self.language,
    }
    out = {"id": self.id, "messages": messages, "lineage": lineage}
    if self.teacher_logprobs is not None:
      out["teacher_logprobs"] = list(self.teacher_logprobs)
    return out


class SeedError(ValueError):
  pass


def _from_messages(messages, where: str) -> tuple[str, str, str]:
  if not isinstance(messages, list) or not all(
      isinstance(m, dict)
      and isinstance(m.get("content"), str)
      and m.get("role") in ("system", "user", "assistant")
      for m in messages
  ):
    raise SeedError(
        f"{where}: 'messages' must be a list of {{role, content}} with roles system/user/assistant"
    )
  roles = [m["role"] for m in messages]
  if roles not in (
      ["user"],
      ["user", "assistant"],
      ["system", "user"],
      ["system", "user", "assistant"],
  ):
    raise SeedError(f"{where}: expected one turn [system?, user, assistant?], got roles {roles}")
  by_role = {m["role"]: m["content"] for m in messages}
  return by_role.get("system", ""), by_role["user"], by_role.get("assistant", "")


def parse_seed_line(line: str, where: str, record_id: str) -> Record:
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    raise SeedError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
  if not isinstance(obj, dict):
    raise SeedError(f"{where}: expected a JSON object, got {type(obj).__name__}")
  if "messages" in obj:
    system, instruction, response = _from_messages(obj["messages"], where)
  elif isinstance(obj.get("instruction"), str):
    system, instruction, response = "", obj["instruction"], obj.get("output", "")
    if obj.get("input"):
      instruction = f"{instruction}\n\n{obj['input']}"
    if not isinstance(response, str):
      raise SeedError(f"{where}: 'output' must be a string")
  else:
    raise SeedError(f"{where}: needs 'messages' or 'instruction'")
  if not instruction.strip():
    raise SeedError(f"{where}: empty instruction")
  if "id" in obj:  # the source's own id survives to the shards (and on to prepare)
    if not isinstance(obj["id"], (str, int)) or not str(obj["id"]).strip():
      raise SeedError(f"{where}: 'id' must be a non-empty string or integer")
    record_id = str(obj["id"])
  return Record(id=record_id, instruction=instruction, response=response, system=system)


def read_seeds(path: str, *, shard_index: int = 0, num_shards: int = 1) -> list[Record]:
  """Reads the seed JSONL; shard i of n takes the non-blank lines whose index is i mod n.

  A record's id is the line's own `id` when it has one, else its line number in the file, so ids
  are stable across shardings and merges.
  """
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index {shard_index} must be in [0, {num_shards})")
  records = []
  with open(path, encoding="utf-8") as f:
    position = 0
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      if position % num_shards == shard_index:
        records.append(parse_seed_line(line, f"{path}:{lineno}", f"seed-{lineno:08d}"))
      position += 1
  return records
