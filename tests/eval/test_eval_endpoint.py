"""`distil-jax eval --endpoint` and the judges, against the scripted fault server over loopback:
answers and verdicts are the scripted teacher's, faults are retried, and a killed run resumes
without sending an answered request again."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from distil_jax.cli import main
from distil_jax.commands.eval import default_prompts
from distil_jax.curate.journal import read_journal
from distil_jax.curate.testing import scripted_teacher
from distil_jax.curate.testing.fault_server import FaultServer
from distil_jax.eval import judges
from distil_jax.eval.ifeval import read_prompts

SAMPLING = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64}


def _scripted(messages, sampling=SAMPLING):
  return scripted_teacher.answer({"messages": messages, **sampling})[0]


def test_ifeval_through_an_endpoint_with_faults_and_a_free_rerun(scripted_server, tmp_path):
  server, url = scripted_server
  out = tmp_path / "ep.json"
  argv = [
      "eval",
      "--endpoint",
      url,
      "--model_name",
      "student",
      "--limit",
      "12",
      "--max_new_tokens",
      "64",
      "--output",
      str(out),
      "--no_progress",
  ]
  assert main(argv) == 0
  result = json.loads(out.read_text())
  assert sum(server.injected.values()) > 0  # faults happened and were retried
  assert result["source"]["failures"] == {}
  rows = [json.loads(l) for l in open(result["ifeval"]["answers_file"], encoding="utf-8")]
  prompts = read_prompts(default_prompts())[:12]
  assert [r["response"] for r in rows] == [
      _scripted([{"role": "user", "content": p.prompt}]) for p in prompts
  ]

  answered = len(server.answered_keys)
  assert main(argv) == 0  # everything comes from the journal
  assert len(server.answered_keys) == answered
  assert (
      json.loads(out.read_text())["ifeval"]["prompt_level_loose_acc"]
      == result["ifeval"]["prompt_level_loose_acc"]
  )


def test_evaluating_an_endpoint_never_imports_jax(scripted_server, tmp_path):
  # Like curation, evaluating a served model must work on a machine without JAX.
  _, url = scripted_server
  code = (
      "import sys\nfrom distil_jax.cli import main\n"
      f"rc = main(['eval', '--endpoint', {url!r}, '--model_name', 's', '--limit', '3', '--no_progress',"
      f" '--output', {str(tmp_path / 'r.json')!r}])\n"
      "assert rc == 0 and 'jax' not in sys.modules, (rc, 'jax' in sys.modules)"
  )
  subprocess.run(
      [sys.executable, "-c", code],
      check=True,
      env={**os.environ, "PYTHONPATH": os.getcwd()},
      capture_output=True,
  )
  assert json.loads((tmp_path / "r.json").read_text())["ifeval"]["num_prompts"] == 3


def test_an_endpoint_that_refuses_everything_is_one_line_and_exit_2(tmp_path, capsys):
  server = FaultServer(api_key="right-key")
  url = server.start_in_thread()
  try:
    assert (
        main(
            [
                "eval",
                "--endpoint",
                url,
                "--model_name",
                "student",
                "--limit",
                "3",
                "--output",
                str(tmp_path / "r.json"),
                "--no_progress",
            ]
        )
        == 2
    )
  finally:
    server.stop()
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.startswith(
      f"distil-jax eval: endpoint {url} (model student): every request failed {{'unauthorized': 3}}"
  )
  assert not (tmp_path / "r.json").exists()


QUESTIONS = [
    {
        "question_id": 81,
        "category": "writing",
        "turns": ["Write a haiku about rain.", "Now make it rhyme."],
    },
    {
        "question_id": 82,
        "category": "math",
        "turns": ["What is 12 * 7?", "And divided by 4?"],
        "reference": ["84", "21"],
    },
    {"question_id": 83, "category": "writing", "turns": ["Name three colours."]},
]


def test_mt_bench_single_grading_multi_turn(scripted_server, tmp_path):
  server, url = scripted_server
  questions = tmp_path / "question.jsonl"
  questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
  out = tmp_path / "mt.json"
  assert (
      main(
          [
              "eval",
              "--endpoint",
              url,
              "--model_name",
              "student",
              "--skip_ifeval",
              "--mt_bench",
              str(questions),
              "--judge_endpoint",
              url,
              "--judge_model",
              "judge",
              "--max_new_tokens",
              "64",
              "--output",
              str(out),
              "--no_progress",
          ]
      )
      == 0
  )
  mt = json.loads(out.read_text())["mt_bench"]
  assert "not comparable with the official leaderboards" in mt["note"]
  ratings = []
  for q, row in zip(QUESTIONS, mt["questions"]):
    # Turn 2 is answered with the model's own turn-1 answer in the context.
    answers, history = [], []
    for turn in q["turns"]:
      history.append({"role": "user", "content": turn})
      answers.append(_scripted(history))
      history.append({"role": "assistant", "content": answers[-1]})
    assert row["answers"] == answers
    judge_sampling = {"temperature": 0.0, "max_tokens": 1024}
    expected = [
        judges.parse_rating(
            _scripted(
                judges.single_prompt(q["turns"], answers, t, q.get("reference", [])), judge_sampling
            )
        )
        for t in range(len(q["turns"]))
    ]
    assert row["ratings"] == expected and None not in expected
    ratings += expected
  assert mt["score"] == pytest.approx(np.mean(ratings))
  assert mt["per_turn"]["turn_2"] == pytest.approx(
      np.mean([r["ratings"][1] for r in mt["questions"][:2]])
  )
  assert mt["judged"] == 5 and mt["unparsed"] == 0


def _references(n):
  return [
      {
          "instruction": f"Explain idea number {i} in a sentence.",
          "output": "Reference answer. " * (1 + i % 4),
      }
      for i in range(n)
  ]


def test_alpaca_eval_pairwise_killed_and_resumed_without_paying_twice(tmp_path):
  server = FaultServer(delay_s=0.15)
  url = server.start_in_thread()
  try:
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(_references(12)))
    out = tmp_path / "ae.json"
    argv = [
        "eval",
        "--endpoint",
        url,
        "--model_name",
        "student",
        "--skip_ifeval",
        "--alpaca_eval",
        str(refs),
        "--judge_endpoint",
        url,
        "--judge_model",
        "judge",
        "--max_in_flight",
        "2",
        "--max_new_tokens",
        "64",
        "--output",
        str(out),
        "--no_progress",
    ]
    journal = str(out) + ".journal.jsonl"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "distil_jax.cli", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        not os.path.exists(journal) or len(read_journal(journal)[0]) < 16
    ):
      time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    paid = set(read_journal(journal)[0])
    assert (
        16 <= len(paid) < 36 and not out.exists()
    )  # killed mid-run: answers done, judging under way
    sent_before = len(server.answered_keys)

    assert main(argv) == 0
    resent = set(server.answered_keys[sent_before:])
    assert not resent & paid  # nothing journaled before the kill was sent again
    assert len(set(read_journal(journal)[0])) == 36  # 12 answers + 2 x 12 verdicts
  finally:
    server.stop()

  ae = json.loads(out.read_text())["alpaca_eval"]
  wins = []
  for ref, item in zip(_references(12), ae["items"]):
    answer = _scripted([{"role": "user", "content": ref["instruction"]}])
    assert item["answer"] == answer
    judge_sampling = {"temperature": 0.0, "max_tokens": 1024}
    first = judges.parse_verdict(
        _scripted(judges.pairwise_prompt(ref["instruction"], answer, ref["output"]), judge_sampling)
    )
    second = judges.parse_verdict(
        _scripted(judges.pairwise_prompt(ref["instruction"], ref["output"], answer), judge_sampling)
    )
    assert item["verdicts"] == [first, second]
    wins.append(judges.pair_win(first, second))
  assert ae["win_rate"] == pytest.approx(np.mean(wins))
  assert 0 < ae["lc_win_rate"] < 1 and "not comparable" in ae["note"]
