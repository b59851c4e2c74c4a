"""`make demo`: the DistilQwen2.5 method end to end on a domain whose answers a rule can check.

Every stage runs the real command line (`python -m distil_jax.cli ...`), in this order:
  world      train / held-out prompts of the demo's domain (distil_jax/demo/world.py), chat JSONL
  teacher    a Qwen2.5-architecture teacher (4 layers, width 128) trained on the domain's reference
             answers with `distil-jax train`, exported to HF
  curate     the teacher behind `distil-jax serve` answers the distillation prompts (with its
             top-10 chat log-probs); the world's rule behind a judge endpoint grades its answers
             and the untrained student's; `distil-jax curate` keeps what passes the judge and the
             Model-Fit-Difficulty score; `prepare` -> SFT data; `chat-logits` -> a gray-box store
             (distil_jax/demo/curation.py)
  sft        the student (2 layers, width 64, random init) trained on the curated answers
  sft_more   the SFT run continued for the distillation stages' steps: SFT alone at equal tokens
  kd         logit KD (forward KL + CE, 0.5/0.5) from the SFT checkpoint, the teacher in the step
  kd_offline the teacher's top-10 stored once (`teacher-logits`), then the same KD from the store
  kd_chat    the same KD from the store of the teacher's chat log-probs made during curation
  fusion     KD + progressive hidden-state fusion from the SFT checkpoint
  dpo        pairs of the teacher's answer vs the KD student's own (`make-pairs`, `prepare-pairs`),
             the reference log-probs of the KD student (`ref-logprobs`), DPO from it
  export     each run -> HF; transformers reloads the last one and its logits must match ours
  eval       `distil-jax eval` of every model on the held-out prompts (answers, IFEval-style
             verdicts, perplexity on the held-out references) -> the table, JSON, Markdown, PNG

Resumable: each stage writes `<workdir>/stages/<name>.done` last; a rerun skips finished stages.
Any failing command stops the demo with a non-zero exit naming the stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from distil_jax.demo import report, world  # noqa: E402  (after the path: runs from a clone)
from distil_jax.demo.sizes import SIZES, Size  # noqa: E402

CLI = [sys.executable, "-m", "distil_jax.cli"]
TEACHER = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
STUDENT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


class Demo:

  def __init__(self, work: str, size: Size, seed: int):
    self.work, self.size, self.seed = work, size, seed
    self.started = time.time()
    self.timings: dict[str, float] = {}
    os.makedirs(os.path.join(work, "stages"), exist_ok=True)
    settings = json.dumps({"size": dataclasses.asdict(size), "seed": seed}, sort_keys=True)
    marker = os.path.join(work, "stages", "settings.json")
    if os.path.exists(marker) and world.read_jsonl(marker) != [json.loads(settings)]:
      raise SystemExit(
          f"demo: {work} holds a run with other settings ({marker}); "
          "use another --workdir or delete it"
      )
    with open(marker + ".tmp", "w") as f:
      f.write(settings)
    os.replace(marker + ".tmp", marker)

  def path(self, *parts: str) -> str:
    return os.path.join(self.work, *parts)

  def stage(self, name: str, fn) -> None:
    marker = self.path("stages", name + ".done")
    if os.path.exists(marker):
      print(f"=== {name}: done in an earlier run, skipped", flush=True)
      self.timings[name] = world.read_jsonl(marker)[0].get("seconds", 0.0)
      return
    print(f"\n=== {name} ({time.time() - self.started:.0f} s into the demo)", flush=True)
    t0 = time.time()
    try:
      fn()
    except subprocess.CalledProcessError as e:
      raise SystemExit(f"demo: stage {name!r} failed: {' '.join(e.cmd[2:])} exited {e.returncode}")
    self.timings[name] = time.time() - t0
    with open(marker + ".tmp", "w") as f:
      json.dump({"seconds": self.timings[name]}, f)
    os.replace(marker + ".tmp", marker)
    print(f"--- {name}: {self.timings[name]:.0f} s", flush=True)

  def env(self) -> dict:
    """One persistent compilation cache for every command: the stages share model shapes, so
    a later command loads most of its programs instead of compiling them again."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=self.path("jax_cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    return env

  def cli(self, *args: str) -> None:
    print("$ distil-jax " + " ".join(args), flush=True)
    subprocess.run(CLI + list(args), check=True, cwd=ROOT, env=self.env())

  # --- stages -----------------------------------------------------------------------------
  def world(self) -> None:
    s = self.size
    train, heldout = world.generate(self.seed, s.n_train + s.n_distil, s.n_heldout)
    os.makedirs(self.path("world"), exist_ok=True)
    world.write_jsonl(
        self.path("world", "teacher_train.jsonl"), [e.chat() for e in train[: s.n_train]]
    )
    distil = [e for e in train[s.n_train :]]
    world.write_jsonl(
        self.path("world", "distil_prompts.jsonl"),
        [{"key": e.key, "messages": e.chat()["messages"][:1]} for e in distil],
    )
    world.write_jsonl(self.path("world", "distil_rows.jsonl"), [e.ifeval() for e in distil])
    world.write_jsonl(self.path("world", "heldout.jsonl"), [e.ifeval() for e in heldout])
    world.write_jsonl(self.path("world", "heldout_chat.jsonl"), [e.chat() for e in heldout])
    for e in train[:3] + heldout[:2]:
      print(f"  {e.key}: {e.prompt!r} -> {e.answer!r}")
    print(
        f"  {s.n_train} teacher examples, {len(distil)} distillation prompts, "
        f"{len(heldout)} held-out prompts (operands never in training)"
    )
    for name, src in (
        ("teacher_data", "teacher_train.jsonl"),
        ("heldout_data", "heldout_chat.jsonl"),
    ):
      self.cli(
          "prepare",
          "--input",
          self.path("world", src),
          "--output",
          self.path(name),
          "--max_length",
          str(s.seq_len),
          "--overwrite",
      )

  def inits(self) -> None:
    from distil_jax.testing.hf_models import make_hf_checkpoint
    from distil_jax.tokenizer import load_tokenizer

    tok = load_tokenizer()
    for name, shape, seed in (
        ("teacher_init_hf", TEACHER, self.seed + 1),
        ("student_init_hf", STUDENT, self.seed + 2),
    ):
      make_hf_checkpoint(
          self.path(name),
          seed=seed,
          vocab_size=151936,
          tie_word_embeddings=True,
          randomize_norms_and_biases=False,
          bos_token_id=151643,
          eos_token_id=151645,
          max_position_embeddings=256,
          **shape,
      )
      tok.save_pretrained(self.path(name))
      print(
          f"  {name}: {shape['num_hidden_layers']} layers, width {shape['hidden_size']}, "
          "vocabulary 151,936 (Qwen2.5's), the Qwen2.5 tokenizer and chat template"
      )

  def train(
      self, run: str, config: str, data: str, init: str, steps: int, lr: float, *extra: str
  ) -> None:
    s = self.size
    self.cli(
        "train",
        "--config",
        config,
        "--workdir",
        self.path("runs", run),
        f"--config.data.path={data}",
        "--config.init.kind=hf",
        f"--config.init.path={init}",
        f"--config.steps={steps}",
        f"--config.data.batch_size={s.batch}",
        f"--config.data.seq_len={s.seq_len}",
        f"--config.optim.lr={lr}",
        f"--config.optim.warmup_steps={max(1, steps // 10)}",
        "--config.loss_chunk=512",
        "--config.loss_positions=-1",  # the LM head only at the trained positions: ~5 of 64
        f"--config.log_every={max(1, steps // 15)}",
        f"--config.checkpoint.every_steps={steps}",
        "--config.checkpoint.async_save=False",
        "--export",
        self.path("models", run),
        "--tokenizer",
        self.path("student_init_hf"),
        "--no_progress",
        *extra,
    )

  def teacher(self) -> None:
    s = self.size
    self.train(
        "teacher",
        "configs/sft/tiny.py",
        self.path("teacher_data"),
        self.path("teacher_init_hf"),
        s.teacher_steps,
        s.teacher_lr,
    )

  def curate(self) -> None:
    from distil_jax.demo import curation

    curation.run(self, CLI, ROOT)

  def student(self, run: str) -> None:
    s = self.size
    data = self.path("student_data")
    teacher = f"--config.frozen.teacher.path={self.path('models', 'teacher')}"
    sft_ckpt = self.path("models", "sft")
    if run == "sft":
      self.train(
          "sft",
          "configs/sft/tiny.py",
          data,
          self.path("student_init_hf"),
          s.sft_steps,
          s.student_lr,
      )
    elif run == "sft_more":
      self.train("sft_more", "configs/sft/tiny.py", data, sft_ckpt, s.distil_steps, s.student_lr)
    elif run == "kd":
      self.train(
          "kd",
          "configs/fusion/tiny.py",
          data,
          sft_ckpt,
          s.distil_steps,
          s.student_lr,
          teacher,
          "--config.loss.fusion_weight=0.0",
      )
    elif run == "kd_offline":
      self.cli(
          "teacher-logits",
          "--teacher",
          self.path("models", "teacher"),
          "--data",
          data,
          "--output",
          self.path("teacher_top10"),
          "--top_k",
          "10",
          "--max_length",
          str(s.seq_len),
          "--dtype",
          "float32",
          "--chunk",
          "8",  # slots of 8 positions: a row trains ~5, so the LM head runs on 8-16 of 64
          "--batch_size",
          "32",
      )
      self.train(
          "kd_offline",
          "configs/kd/tiny_offline.py",
          data,
          sft_ckpt,
          s.distil_steps,
          s.student_lr,
          f"--config.data.teacher_store={self.path('teacher_top10')}",
      )
    elif run == "kd_chat":
      self.train(
          "kd_chat",
          "configs/kd/tiny_offline.py",
          data,
          sft_ckpt,
          s.distil_steps,
          s.student_lr,
          f"--config.data.teacher_store={self.path('teacher_chat_top10')}",
      )
    elif run == "dpo":
      from distil_jax.demo import curation

      kd = self.path("models", "kd")
      self.cli(
          "make-pairs",
          "--student",
          kd,
          "--input",
          *curation.curated_shards(self),
          "--output",
          self.path("pairs"),
          "--max_new_tokens",
          "16",
          "--batch_size",
          "64",
          "--temperature",
          str(s.answer_temperature),
          "--seed",
          str(self.seed),
      )
      self.cli(
          "prepare-pairs",
          "--input",
          self.path("pairs"),
          "--output",
          self.path("pairs_tok"),
          "--max_length",
          str(s.seq_len),
      )
      self.cli(
          "ref-logprobs",
          "--model",
          kd,
          "--pairs",
          self.path("pairs_tok"),
          "--output",
          self.path("pairs_ref"),
          "--dtype",
          "float32",
          "--loss_positions=-1",  # as the DPO run: the same sums the train step computes
      )
      self.train(
          "dpo",
          f"configs/dpo/tiny.py:{kd}",
          self.path("pairs_tok"),
          kd,
          s.distil_steps,
          1e-3,
          f"--config.loss.reference_logprobs={self.path('pairs_ref')}",
          "--config.loss.variant=length_normalised",  # the method's DPO
      )
    elif run == "fusion":
      self.train(
          "fusion", "configs/fusion/tiny.py", data, sft_ckpt, s.distil_steps, s.student_lr, teacher
      )

  def check_export(self) -> None:
    from distil_jax.demo.parity import logits_difference

    hf_dir = self.path("models", "fusion")
    diff = logits_difference(hf_dir, "What is 2 + 3?")
    print(f"  transformers reloads {hf_dir}: max |logits difference| = {diff:.2e} (float32)")
    if diff > 1e-4:
      raise SystemExit("demo: the exported student does not reproduce distil-jax's logits")

  def evaluate(self, name: str) -> None:
    model = self.path("student_init_hf") if name == "student_init" else self.path("models", name)
    self.cli(
        "eval",
        "--model",
        model,
        "--name",
        name,
        "--prompts",
        self.path("world", "heldout.jsonl"),
        "--data",
        self.path("heldout_data"),
        "--seq_len",
        str(self.size.seq_len),
        "--max_new_tokens",
        "16",
        "--batch_size",
        "64",
        "--loss_chunk",
        "512",
        "--dtype",
        "float32",
        "--no_progress",
        "--output",
        self.path("eval", name + ".json"),
    )


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/distil-jax-demo")
  parser.add_argument("--size", choices=sorted(SIZES), default="full")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  demo = Demo(os.path.abspath(args.workdir), SIZES[args.size], args.seed)
  print(
      f"distil-jax demo ({args.size}) in {demo.work}; load average {os.getloadavg()[0]:.1f} "
      f"on {os.cpu_count()} CPUs",
      flush=True,
  )
  demo.stage("world", demo.world)
  demo.stage("inits", demo.inits)
  demo.stage("teacher", demo.teacher)
  demo.stage("curate", demo.curate)
  for run in ("sft", "sft_more", "kd", "kd_offline", "kd_chat", "fusion", "dpo"):
    demo.stage(run, lambda run=run: demo.student(run))
  demo.stage("check_export", demo.check_export)
  for _, name in report.ROWS:
    demo.stage("eval_" + name, lambda name=name: demo.evaluate(name))
  demo.stage("report", lambda: report.report(demo))
  print(
      f"\ndemo finished in {time.time() - demo.started:.0f} s "
      f"(stages: {', '.join(f'{k} {v:.0f}s' for k, v in demo.timings.items())})"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
