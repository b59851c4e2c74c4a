"""The judge flows end to end: answers from the evaluated source, verdicts from the judge endpoint.

Both flows send every judge request through the journaled curation client (`answers.run_requests`),
so a rerun after a kill reuses every verdict already paid for. See `judges` for the method.
"""

from __future__ import annotations

from distil_jax.eval import judges
from distil_jax.eval.answers import endpoint_config, run_requests


def judge_endpoint(args):
  return endpoint_config(
      args.judge_endpoint,
      args.judge_model,
      name="judge",
      api_key_env=args.judge_api_key_env,
      max_in_flight=args.max_in_flight,
  )


def _sampling(args) -> dict:
  return {"temperature": 0.0, "max_tokens": args.judge_max_tokens}


def mt_bench(source, judge, journal: str, args, gen) -> dict:
  """Multi-turn answers (turn t sees the model's own earlier answers), then one rating per turn."""
  questions = judges.read_questions(args.mt_bench)
  if args.limit:
    questions = questions[: args.limit]
  answers: list[list[str]] = [[] for _ in questions]
  for turn in range(max(len(q["turns"]) for q in questions)):
    live = [i for i, q in enumerate(questions) if turn < len(q["turns"])]
    conversations = []
    for i in live:
      messages = []
      for t in range(turn):
        messages += [
            {"role": "user", "content": questions[i]["turns"][t]},
            {"role": "assistant", "content": answers[i][t]},
        ]
      conversations.append(messages + [{"role": "user", "content": questions[i]["turns"][turn]}])
    for i, reply in zip(live, source.answer(conversations, gen, desc=f"mt_bench turn {turn + 1}")):
      answers[i].append(reply)
  requests, where = [], []
  for i, q in enumerate(questions):
    for turn in range(len(q["turns"])):
      requests.append(
          (judges.single_prompt(q["turns"], answers[i], turn, q["reference"]), _sampling(args))
      )
      where.append((i, turn))
  outcomes = run_requests(
      judge, journal, requests, desc="mt_bench judge", progress=not args.no_progress
  )
  ratings = [[None] * len(q["turns"]) for q in questions]
  for (i, turn), outcome in zip(where, outcomes):
    ratings[i][turn] = judges.parse_rating(outcome.content) if hasattr(outcome, "content") else None
  rows = [
      {"question_id": q["question_id"], "category": q["category"], "ratings": r, "answers": a}
      for q, r, a in zip(questions, ratings, answers)
  ]
  return {**judges.summarize_single(rows), "judge": judge.model, "questions": rows}


def alpaca_eval(source, judge, journal: str, args, gen) -> dict:
  """The model's answer vs the reference answer, judged in both positions."""
  refs = judges.read_references(args.alpaca_eval)
  if args.limit:
    refs = refs[: args.limit]
  replies = source.answer(
      [[{"role": "user", "content": r["instruction"]}] for r in refs], gen, desc="alpaca_eval"
  )
  requests = []
  for ref, reply in zip(refs, replies):
    requests.append(
        (judges.pairwise_prompt(ref["instruction"], reply, ref["output"]), _sampling(args))
    )
    requests.append(
        (judges.pairwise_prompt(ref["instruction"], ref["output"], reply), _sampling(args))
    )
  outcomes = run_requests(
      judge, journal, requests, desc="alpaca_eval judge", progress=not args.no_progress
  )
  verdicts = [judges.parse_verdict(o.content) if hasattr(o, "content") else None for o in outcomes]
  wins = [judges.pair_win(verdicts[2 * i], verdicts[2 * i + 1]) for i in range(len(refs))]
  rows = [
      {
          "instruction": r["instruction"],
          "answer": a,
          "verdicts": verdicts[2 * i : 2 * i + 2],
          "win": w,
      }
      for i, (r, a, w) in enumerate(zip(refs, replies, wins))
  ]
  return {
      **judges.summarize_pairwise(wins, replies, [r["output"] for r in refs]),
      "judge": judge.model,
      "items": rows,
  }
