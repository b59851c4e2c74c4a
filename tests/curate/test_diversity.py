"""Diversity stages: duplicates, task ratios, instruction lengths, languages."""

from __future__ import annotations

import collections
import random
import statistics

from distil_jax.curate.agents.expand import allocate
from distil_jax.curate.config import DedupConfig, LengthSamplingConfig
from distil_jax.curate.diversity.dedup import remove_duplicates
from distil_jax.curate.diversity.resample_tasks import resample
from distil_jax.curate.diversity.sample_lengths import sample
from distil_jax.curate.language import detect_language
from distil_jax.curate.records import Record
from distil_jax.curate.stage_report import StageReport


def rec(i: int, instruction: str, task: str = "") -> Record:
  return Record(id=f"r{i}", instruction=instruction, response="", task=task)


def test_exact_and_near_duplicates_are_removed_keeping_the_first():
  records = [
      rec(0, "Explain how photosynthesis turns light into chemical energy in plants."),
      rec(1, "explain how photosynthesis turns light into chemical energy in plants.  "),
      rec(2, "Explain how photosynthesis turns light into chemical energy in green plants."),
      rec(3, "Write a haiku about the sea at night."),
      rec(4, "请解释光合作用如何把光能转化为植物中的化学能。"),
      rec(5, "请解释光合作用如何把光能转化为植物中的化学能量。"),
  ]
  report = StageReport("dedup")
  kept = remove_duplicates(
      records, DedupConfig(near_threshold=0.7, shingle_chars=5, sketch_size=64), report
  )
  assert [r.id for r in kept] == ["r0", "r3", "r4"]
  assert report.filtered == {"exact_duplicate": 1, "near_duplicate": 2}


def test_resampling_caps_each_task_at_its_share_and_never_upsamples():
  records = [rec(i, f"q{i}", "math") for i in range(80)] + [
      rec(100 + i, f"w{i}", "writing") for i in range(20)
  ]
  report = StageReport("resample_tasks")
  kept = resample(records, {"math": 0.5, "writing": 0.5}, 0, seed=0, report=report)
  counts = collections.Counter(r.task for r in kept)
  assert counts == {"math": 50, "writing": 20}
  assert kept == resample(
      records, {"math": 0.5, "writing": 0.5}, 0, seed=0, report=StageReport("again")
  )


def test_length_sampling_pulls_lengths_towards_the_target_normal():
  rng = random.Random(0)
  records = [rec(i, "x" * rng.randint(10, 1000)) for i in range(2000)]
  config = LengthSamplingConfig(keep_fraction=0.3, mean_chars=300.0, std_chars=60.0)
  kept = sample(records, config, seed=0, report=StageReport("sample_lengths"))
  lengths = [len(r.instruction) for r in kept]
  assert len(kept) == 600
  assert abs(statistics.fmean(lengths) - 300) < 40 and statistics.pstdev(lengths) < 120


def test_expansion_goes_to_the_tasks_furthest_below_their_ratio():
  share = allocate(
      {"math": 10, "writing": 0, "code_generation": 5},
      {"math": 0.4, "writing": 0.3, "code_generation": 0.3},
      10,
  )
  assert sum(share.values()) == 10 and share["writing"] > share["code_generation"] >= share["math"]


def test_language_detection_tells_chinese_from_english():
  assert detect_language("为什么天空是蓝色的？") == "zh"
  assert detect_language("Why is the sky blue?") == "en"
  assert detect_language("用 Python 写一个函数") == "zh"
