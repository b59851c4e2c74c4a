"""The demo's sizes: `full` is `make demo`'s, `test` the smallest that still runs every stage."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Size:
  n_train: int  # the teacher's training set (reference answers)
  n_distil: int  # prompts the teacher answers for the student
  n_heldout: int
  teacher_steps: int
  sft_steps: int
  distil_steps: int  # KD, KD + fusion and the equal-token SFT continuation each
  batch: int
  seq_len: int
  teacher_lr: float
  student_lr: float
  answer_temperature: (
      float  # the teacher's (curation) and the student's (make-pairs) answers; 0 greedy
  )
  judge_min_score: float  # curation keeps a teacher answer the rule judge scores at least this
  judge_min_fit: float  # ... and that beats the untrained student's by at least this


SIZES = {
    "full": Size(
        n_train=4000,
        n_distil=1024,  # ~600 distinct after exact dedup
        n_heldout=120,
        teacher_steps=100,
        sft_steps=40,
        distil_steps=30,
        batch=8,
        seq_len=64,
        teacher_lr=3e-3,
        student_lr=3e-3,
        answer_temperature=0.0,
        # The method's filter (score >= 5: right content; MFD >= 1) keeps what the teacher gets
        # right, ~3% of this CPU-trained teacher's answers: too few to train on. The demo
        # grades every answer, reports that count, and keeps every answer the judge does not
        # rank below the student's (MFD >= 0).
        judge_min_score=1.0,
        judge_min_fit=0.0,
    ),
    # An untrained teacher (and student) answers greedily with nothing; sampled, it says something.
    "test": Size(
        n_train=200,
        n_distil=32,
        n_heldout=12,
        teacher_steps=30,  # enough to end its answers: curation keeps only answers that stop
        sft_steps=3,
        distil_steps=2,
        batch=4,
        seq_len=64,
        teacher_lr=3e-3,
        student_lr=3e-3,
        answer_temperature=1.0,
        judge_min_score=0.0,  # a barely trained teacher is never right: keep what it says
        judge_min_fit=-9.0,
    ),
}
