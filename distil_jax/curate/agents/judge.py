"""Selection by LLM-as-judge, with the Model-Fit-Difficulty score.

The judge scores the teacher's answer and the student's answer to the same instruction (0-9);
fit_difficulty = teacher score - student score. A pair is kept when the teacher's answer is good
(score >= min_score) and the student still has something to learn from it
(fit_difficulty >= min_fit_difficulty).
"""

from __future__ import annotations

import asyncio

from distil_jax.curate.agents.base import Outcome, StageContext, map_records, refused, system_prompt
from distil_jax.curate.agents.student_answers import StudentAnswers
from distil_jax.curate.client import Failure
from distil_jax.curate.parsing import Rejection, extract_json_object
from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport

AGENT = "judge"
CRITERIA = ("informativeness", "helpfulness", "difficulty", "score")


def build_messages(instruction: str, answer: str) -> list[dict]:
  return [
      {
          "role": "system",
          "content": system_prompt(
              AGENT, "You grade answers to instructions, strictly and consistently."
          ),
      },
      {
          "role": "user",
          "content": (
              f"<instruction>{instruction}</instruction>\n<answer>{answer}</answer>\n\n"
              "Grade from 0 to 9: informativeness and helpfulness of the answer, difficulty of the instruction, "
              "and an overall score of the answer. Reply with a JSON object with the integer keys "
              '"informativeness", "helpfulness", "difficulty", "score".'
          ),
      },
  ]


def parse(completion) -> dict[str, int] | Rejection:
  obj = extract_json_object(completion)
  if isinstance(obj, Rejection):
    return obj
  if any(not isinstance(obj.get(c), int) or isinstance(obj.get(c), bool) for c in CRITERIA):
    return Rejection("missing_score")
  if any(not 0 <= obj[c] <= 9 for c in CRITERIA):
    return Rejection("out_of_range")
  return {c: obj[c] for c in CRITERIA}


async def run(records: list[Record], ctx: StageContext, report: StageReport) -> list[Record]:
  config = ctx.config.judge
  agent = config.agent
  students = StudentAnswers(ctx, config.student, config.student_answers_path)

  async def grade(instruction: str, answer: str) -> dict[str, int] | Rejection | Failure:
    completion = await ctx.ask(agent, build_messages(instruction, answer))
    return completion if isinstance(completion, Failure) else parse(completion)

  async def handle(record: Record) -> Outcome:
    if not record.response:
      return Outcome(filtered="no_response")
    student = await students.get(record)
    if student is None:
      return refused(record, agent, filtered="no_student_answer")
    if isinstance(student, Failure):
      return refused(record, agent, failed=f"student:{student.reason}")
    teacher_grade, student_grade = await asyncio.gather(
        grade(record.instruction, record.response), grade(record.instruction, student)
    )
    for g in (teacher_grade, student_grade):
      if isinstance(g, Failure):
        return refused(record, agent, failed=g.reason)
      if isinstance(g, Rejection):
        return refused(record, agent, filtered=g.reason)
    fit = teacher_grade["score"] - student_grade["score"]
    scored = record.touched_by(AGENT, student_response=student).with_scores(
        **{f"judge_{c}": float(v) for c, v in teacher_grade.items()},
        student_score=float(student_grade["score"]),
        fit_difficulty=float(fit),
    )
    if teacher_grade["score"] < config.min_score:
      return Outcome(filtered="low_judge_score")
    if fit < config.min_fit_difficulty:
      return Outcome(filtered="low_fit_difficulty")
    return Outcome((scored,))

  return await map_records(ctx, report, records, handle)
