"""The demo world's judge: its answer rule behind an OpenAI-compatible chat endpoint on loopback.

In a real run the curation `judge` stage asks a large LLM to grade answers 0-9 (the teacher's and
the student's, for the Model-Fit-Difficulty score). The demo's tiny models cannot judge, but its
world has something better: a rule that knows whether an answer is right (`world.is_correct`)
and whether its formatting constraint holds (the IFEval checkers `distil-jax eval` uses). This
server reads the judge stage's own prompt (`<instruction>...</instruction>`,
`<answer>...</answer>`), grades the answer by the rule and replies with the JSON object the
stage parses, so the curation pipeline, its client, journal and MFD filter run unchanged:

    score = 9 if the content is right and the format holds, 5 if only the content is right, 1 otherwise

An instruction the world does not know is a 400 naming it (the judge was pointed at other data).
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time

from distil_jax.demo import world

_INSTRUCTION = re.compile(r"<instruction>(.*?)</instruction>", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


def grade(row: dict, answer: str) -> dict[str, int]:
  """The judge stage's four criteria for one answer to a world row (`Example.ifeval()`)."""
  from distil_jax.eval.instructions import make_instruction

  right = world.is_correct(row, answer)
  checks = zip(
      row["instruction_id_list"], row.get("kwargs") or [{}] * len(row["instruction_id_list"])
  )
  formatted = all(make_instruction(i, k).check(answer) for i, k in checks)
  score = 9 if right and formatted else 5 if right else 1
  return {"informativeness": score, "helpfulness": score, "difficulty": 5, "score": score}


class _Server(http.server.ThreadingHTTPServer):
  request_queue_size = 512  # the listen backlog: the curation client opens ~64 connections at once


class RuleJudge:
  """`with RuleJudge(rows) as judge:` serves on `judge.base_url` until the block ends."""

  def __init__(self, rows: list[dict]):
    self.rows = {r["prompt"]: r for r in rows}
    self.graded = 0
    judge = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"

      def log_message(self, *args):  # quiet: the curate command reports progress
        pass

      def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

      def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
          self._send(200, {"object": "list", "data": [{"id": "rule-judge", "object": "model"}]})
        else:
          self._send(404, {"error": {"message": f"no route {self.path}"}})

      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if not self.path.rstrip("/").endswith("/chat/completions"):
          self._send(404, {"error": {"message": f"no route {self.path}"}})
          return
        text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        instruction, answer = _INSTRUCTION.search(text), _ANSWER.search(text)
        row = judge.rows.get(instruction.group(1)) if instruction else None
        if row is None or answer is None:
          what = instruction.group(1)[:80] if instruction else "(no <instruction> tag)"
          self._send(400, {"error": {"message": f"rule judge: unknown instruction {what!r}"}})
          return
        judge.graded += 1
        content = json.dumps(grade(row, answer.group(1)))
        self._send(
            200,
            {
                "id": f"judge-{judge.graded}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "rule-judge"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            },
        )

    self._server = _Server(("127.0.0.1", 0), Handler)
    self._server.daemon_threads = True
    self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

  def __enter__(self) -> "RuleJudge":
    threading.Thread(target=self._server.serve_forever, daemon=True).start()
    return self

  def __exit__(self, *exc) -> None:
    self._server.shutdown()
    self._server.server_close()
