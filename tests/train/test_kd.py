"""Logit distillation and hidden-state fusion in the train step: the objective equals its
float64 NumPy reference, its fused chunked gradient equals the full-logit one, offline top-k
equals online top-k, and neither accumulation nor the mesh changes it."""

import dataclasses

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from distil_jax import checkpoints
from distil_jax.model import ModelConfig, create_model
from distil_jax.sharding import MeshConfig, make_mesh
from distil_jax.train import divergences as dv
from distil_jax.train import kd_schedules as sched
from distil_jax.train import train
from distil_jax.train.chunked import chunked_token_loss
from distil_jax.train.config import CheckpointConfig
from distil_jax.train.kd import KDLoss, Source, _KDChunk
from distil_jax.train.loss_config import FrozenModelConfig
from distil_jax.train.objective import apply_loss
from synthetic import SyntheticBatches, batches_for, tiny_train_config

STUDENT = ModelConfig.tiny()  # vocab 512, 2 layers, width 64, float32
# A wider, deeper teacher with 128 padding rows more than the student (like Qwen2.5 7B vs 1.5B),
# initialised large enough that its distributions are peaked rather than near uniform.
TEACHER = ModelConfig.tiny(
    vocab_size=640,
    hidden_size=96,
    num_heads=6,
    num_kv_heads=2,
    head_dim=16,
    intermediate_size=192,
    num_layers=4,
    initializer_range=0.1,
)


def _one_device():
  return make_mesh(MeshConfig(data=1), jax.devices()[:1])


@pytest.fixture(scope="module")
def models():
  mesh = _one_device()
  return create_model(STUDENT, mesh, seed=1), create_model(TEACHER, mesh, seed=2)


@pytest.fixture(scope="module")
def batch():
  b = next(SyntheticBatches(batch_size=2, seq_len=40, vocab_size=STUDENT.vocab_size, seed=3))
  return jax.tree.map(jnp.asarray, b)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, models):
  return checkpoints.save_model(models[1], str(tmp_path_factory.mktemp("kd") / "teacher"))


def _f64_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_online_objective_equals_the_float64_formula(models, batch):
  student, teacher = models
  alpha, T = 0.3, 2.0
  loss = KDLoss(alpha=alpha, temperature=T, chunk=16)
  objective, sums, counts = apply_loss(loss, student, batch, frozen={"teacher": teacher})

  s = np.asarray(student(batch["input_ids"], batch["positions"], batch["segment_ids"]), np.float64)
  t = np.asarray(teacher(batch["input_ids"], batch["positions"], batch["segment_ids"]), np.float64)[
      ..., : STUDENT.vocab_size
  ]  # the shared columns
  m = np.asarray(batch["loss_mask"], np.float64)
  y = np.asarray(batch["target_ids"])
  ce = -np.take_along_axis(_f64_log_softmax(s), y[..., None], -1)[..., 0]
  logp, logq = _f64_log_softmax(t / T), _f64_log_softmax(s / T)
  kl = T * T * (np.exp(logp) * (logp - logq)).sum(-1)
  n = m.sum()
  want = (m * ((1 - alpha) * ce + alpha * kl)).sum() / n
  np.testing.assert_allclose(float(counts["tokens"]), n)
  np.testing.assert_allclose(float(objective), want, rtol=1e-5)
  np.testing.assert_allclose(float(sums["kd"]) / n, (m * kl).sum() / n, rtol=1e-5)
  np.testing.assert_allclose(float(sums["ce"]) / n, (m * ce).sum() / n, rtol=1e-5)


def _naive_kd(student, teacher, batch, alpha, T):
  """The same objective through full [B, L, V] float32 logits: the gradient reference."""
  args = (batch["input_ids"], batch["positions"], batch["segment_ids"])
  s = student(*args).astype(jnp.float32)
  t = jax.lax.stop_gradient(teacher(*args).astype(jnp.float32))[..., : s.shape[-1]]
  m = batch["loss_mask"]
  logq = jax.nn.log_softmax(s, -1)
  ce = -jnp.take_along_axis(logq, batch["target_ids"][..., None], -1)[..., 0]
  kd = dv.dense_divergence(s, t, kind=dv.Divergence.FORWARD_KL, temperature=T)
  return jnp.sum(m * ((1 - alpha) * ce + alpha * kd)) / jnp.sum(m)


def test_chunked_gradient_equals_the_full_logit_gradient(models, batch):
  student, teacher = models
  graphdef, params = nnx.split(student)
  loss = KDLoss(alpha=0.5, temperature=2.0, chunk=16)
  chunked = jax.jit(
      jax.grad(
          lambda p: apply_loss(loss, nnx.merge(graphdef, p), batch, frozen={"teacher": teacher})[0]
      )
  )(params)
  naive = jax.jit(jax.grad(lambda p: _naive_kd(nnx.merge(graphdef, p), teacher, batch, 0.5, 2.0)))(
      params
  )
  for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(naive)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def _offline_fields(teacher, batch, k):
  """The store's view: float64 top-k of the teacher over the shared columns, zeros where the
  loss mask is 0 (as the join writes them)."""
  t = np.asarray(teacher(batch["input_ids"], batch["positions"], batch["segment_ids"]), np.float64)[
      ..., : STUDENT.vocab_size
  ]
  logp = _f64_log_softmax(t)
  ids = np.argsort(-t, axis=-1)[..., :k]
  top = np.take_along_axis(logp, ids, -1)
  tail = np.log1p(-np.exp(top).sum(-1))
  m = np.asarray(batch["loss_mask"]) > 0
  return {
      "topk_ids": jnp.asarray(np.where(m[..., None], ids, 0), jnp.int32),
      "topk_logprobs": jnp.asarray(np.where(m[..., None], top, 0), jnp.float32),
      "topk_tail": jnp.asarray(np.where(m, tail, 0), jnp.float32),
      "kd_mask": jnp.asarray(m, jnp.float32),
  }


@pytest.mark.parametrize("tail", list(dv.TailTreatment))
def test_offline_top_k_equals_online_top_k_in_loss_and_gradients(models, batch, tail):
  student, teacher = models
  graphdef, params = nnx.split(student)
  offline_batch = dict(batch, **_offline_fields(teacher, batch, k=8))
  common = dict(alpha=0.5, tail=tail, chunk=16)
  online = KDLoss(source=Source.ONLINE, online_top_k=8, **common)
  offline = KDLoss(source=Source.OFFLINE, **common)
  assert offline.frozen_models == () and "topk_ids" in offline.fields()

  def value_and_grad(loss, b):
    f = lambda p: apply_loss(loss, nnx.merge(graphdef, p), b, frozen={"teacher": teacher})[0]
    return jax.jit(jax.value_and_grad(f))(params)

  v_on, g_on = value_and_grad(online, batch)
  v_off, g_off = value_and_grad(offline, offline_batch)
  np.testing.assert_allclose(v_off, v_on, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_off), jax.tree.leaves(g_on)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)


def _unscored(batch):
  """A kd_mask with zeros at trained positions: the last trained position of every document (a
  partial store's unscored `<|im_end|>`) and a few more."""
  m = np.asarray(batch["loss_mask"]) > 0
  k = m.copy()
  seg = np.asarray(batch["segment_ids"])
  for row in range(m.shape[0]):
    for s in np.unique(seg[row][seg[row] > 0]):
      trained = np.flatnonzero(m[row] & (seg[row] == s))
      k[row, trained[-1]] = False
      k[row, trained[:3]] = False
  assert k.sum() < m.sum() and k.sum() > 0
  return k.astype(np.float32)


def test_partial_kd_mask_objective_and_gradients_equal_the_float64_formula(models, batch):
  """L = (1/N) sum_t m_t [k_t ((1-a) CE_t + a KD_t) + (1-k_t) CE_t] with KD the forward KL of a
  top-k teacher (tail ignored), N = sum m; `kd` is reported over sum m k. Checked on random
  [B, L, D] states and a [D, V] head through the chunked path, gradients in h and w included,
  against float64 NumPy with the analytic gradient, then through `KDLoss` on the model."""
  student, teacher = models
  alpha, K = 0.3, 8
  fields = _offline_fields(teacher, batch, k=K)
  k_BxL = _unscored(batch)
  fields["kd_mask"] = jnp.asarray(k_BxL)
  B, L = batch["input_ids"].shape
  D, V = 24, STUDENT.vocab_size
  rng = np.random.default_rng(5)
  h = rng.normal(size=(B, L, D)).astype(np.float32)
  w = (rng.normal(size=(D, V)) * 0.5).astype(np.float32)
  chunk_fn = KDLoss(source=Source.OFFLINE, alpha=alpha)._chunk_fn(V)
  inputs = {
      "targets": batch["target_ids"],
      "mask": batch["loss_mask"].astype(jnp.float32),
      **{k: fields[k] for k in ("topk_ids", "topk_logprobs", "topk_tail", "kd_mask")},
  }

  def total(h, w):
    out, sums = chunked_token_loss(
        h, w, inputs, chunk_fn, chunk=16, consts={"alpha": jnp.float32(alpha)}
    )
    return out, sums

  (got, sums), (dh, dw) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
      jnp.asarray(h), jnp.asarray(w)
  )

  m = np.asarray(batch["loss_mask"], np.float64)
  k = k_BxL.astype(np.float64)
  y = np.asarray(batch["target_ids"])
  ids = np.asarray(fields["topk_ids"])
  logp = np.asarray(fields["topk_logprobs"], np.float64)
  s = np.einsum("bld,dv->blv", h.astype(np.float64), w.astype(np.float64))
  logq = _f64_log_softmax(s)
  q = np.exp(logq)
  ce = -np.take_along_axis(logq, y[..., None], -1)[..., 0]
  p = np.exp(logp)
  kd = (p * (logp - np.take_along_axis(logq, ids, -1))).sum(-1)
  want = (m * (k * ((1 - alpha) * ce + alpha * kd) + (1 - k) * ce)).sum()
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  np.testing.assert_allclose(float(sums["kd"]), (m * k * kd).sum(), rtol=1e-5)
  np.testing.assert_allclose(float(sums["ce"]), (m * ce).sum(), rtol=1e-5)
  # d/ds: CE -> q - onehot(y); KD (tail ignored) -> (sum_k p_k) q - p scattered at the ids.
  onehot = np.zeros_like(s)
  np.put_along_axis(onehot, y[..., None], 1.0, -1)
  sparse_p = np.zeros_like(s)
  np.put_along_axis(sparse_p, ids, p, -1)
  d_ce, d_kd = q - onehot, p.sum(-1, keepdims=True) * q - sparse_p
  ds = m[..., None] * ((1 - alpha * k)[..., None] * d_ce + (alpha * k)[..., None] * d_kd)
  np.testing.assert_allclose(
      dh, np.einsum("blv,dv->bld", ds, w.astype(np.float64)), rtol=1e-4, atol=1e-6
  )
  np.testing.assert_allclose(
      dw, np.einsum("bld,blv->dv", h.astype(np.float64), ds), rtol=1e-4, atol=1e-6
  )

  # Through the loss on the model: the objective is normalised by N, `kd` by sum m k.
  offline = KDLoss(source=Source.OFFLINE, alpha=alpha, chunk=16)
  objective, sums, counts = apply_loss(offline, student, dict(batch, **fields))
  s = np.asarray(student(batch["input_ids"], batch["positions"], batch["segment_ids"]), np.float64)
  logq = _f64_log_softmax(s)
  ce = -np.take_along_axis(logq, y[..., None], -1)[..., 0]
  kd = (p * (logp - np.take_along_axis(logq, ids, -1))).sum(-1)
  n, n_kd = m.sum(), (m * k).sum()
  np.testing.assert_allclose(float(counts["tokens"]), n)
  np.testing.assert_allclose(float(counts["kd_tokens"]), n_kd)
  want = (m * (k * ((1 - alpha) * ce + alpha * kd) + (1 - k) * ce)).sum() / n
  np.testing.assert_allclose(float(objective), want, rtol=1e-5)
  np.testing.assert_allclose(float(sums["kd"]) / n_kd, (m * k * kd).sum() / n_kd, rtol=1e-5)
  assert offline.normalisers["kd"] == "kd_tokens"


def _eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _eqns(sub)


def test_online_kd_never_holds_full_logits_and_keeps_three_student_head_matmuls():
  B, L, D, E, V = 2, 1024, 64, 96, 32768
  chunk_fn = _KDChunk(
      source=Source.ONLINE,
      divergence=dv.Divergence.FORWARD_KL,
      tail=dv.TailTreatment.IGNORE,
      beta=0.5,
      columns=V,
      online_top_k=0,
      temperature=1.0,
  )
  h = jax.ShapeDtypeStruct((B, L, D), jnp.bfloat16)
  w = jax.ShapeDtypeStruct((D, V), jnp.bfloat16)
  th = jax.ShapeDtypeStruct((B, L, E), jnp.bfloat16)
  tw = jax.ShapeDtypeStruct((E, V), jnp.bfloat16)
  t = jax.ShapeDtypeStruct((B, L), jnp.int32)
  m = jax.ShapeDtypeStruct((B, L), jnp.float32)

  def kd(h, w, th, tw, t, m):
    inputs = {"targets": t, "mask": m, "teacher_h": th}
    consts = {"alpha": jnp.float32(0.5), "teacher_w": tw}
    return chunked_token_loss(h, w, inputs, chunk_fn, chunk=64, consts=consts)[0]

  grad = jax.grad(kd, argnums=(0, 1))
  temp = jax.jit(grad).lower(h, w, th, tw, t, m).compile().memory_analysis().temp_size_in_bytes
  logits_bytes = B * L * V * 4
  print(
      f"online KD loss+grad temporaries {temp / 2**20:.0f} MiB; one model's full float32 "
      f"logits {logits_bytes / 2**20:.0f} MiB"
  )
  assert temp < logits_bytes / 2  # both models' full logits would be 4x this bound
  dots = [
      e
      for e in _eqns(jax.make_jaxpr(grad)(h, w, th, tw, t, m).jaxpr)
      if e.primitive.name == "dot_general"
      and any(V in v.aval.shape for v in (*e.invars, e.outvars[0]))
  ]
  student_dots = [e for e in dots if not any(v.aval.shape[-1] == E for v in e.invars)]
  assert len(dots) == 4 and len(student_dots) == 3  # + the teacher's logits, forward only
  assert all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)


def _kd_config(teacher_dir, **kw):
  loss = KDLoss(
      alpha=0.5,
      temperature=1.0,
      fusion_weight=0.5,
      fusion_enter_fraction=0.5,
      total_steps=6,
      chunk=16,
  )
  return (
      tiny_train_config(
          frozen={"teacher": FrozenModelConfig(path=teacher_dir)},
          checkpoint=CheckpointConfig(every_steps=1000, keep=1, async_save=True),
          **kw,
      ),
      loss,
  )


def _metrics(workdir):
  import json

  return [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]


def test_accumulation_and_meshes_follow_the_single_device_kd_and_fusion_curve(
    tmp_path, teacher_dir
):
  cfg, loss = _kd_config(teacher_dir)
  ref = train(
      cfg, str(tmp_path / "one"), batches_for(cfg), loss=loss, mesh=_one_device(), progress=False
  )
  reference = _metrics(tmp_path / "one")
  assert {"kd", "ce", "fusion", "layer_tokens"} <= set(reference[0])
  assert all(np.isfinite(r["kd"]) and r["fusion"] > 0 for r in reference)
  assert ref.state.extra is not None  # the projections are trained state
  runs = {
      "accum2": (dataclasses.replace(cfg, grad_accum=2), _one_device()),
      "2x2x2": (cfg, make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))),
  }
  for name, (run_cfg, mesh) in runs.items():
    train(run_cfg, str(tmp_path / name), batches_for(run_cfg), loss=loss, mesh=mesh, progress=False)
    got = _metrics(tmp_path / name)
    for key in ("loss", "kd", "ce", "fusion"):
      np.testing.assert_allclose(
          [r[key] for r in got], [r[key] for r in reference], rtol=2e-5, err_msg=f"{name}: {key}"
      )


def test_fusion_enters_from_the_top_layer_down():
  w = [
      np.asarray(sched.fusion_layer_weights(4, s, 100, sched.Ramp.LINEAR, 1.0, enter_fraction=0.5))
      for s in (0, 13, 30, 60)
  ]
  assert w[0][-1] == 0 and w[1][-1] > 0 and w[1][0] == 0  # the top pair first
  assert (w[3] == 1).all()


class _Rows:
  """Fixed [N, L] sequences served as unpacked batches, in order, repeating."""

  def __init__(self, ids, mask, batch_size):
    self.ids, self.mask, self.batch_size, self.index = ids, mask, batch_size, 0

  def __iter__(self):
    return self

  def __next__(self):
    n = self.ids.shape[0] // self.batch_size
    rows = slice((self.index % n) * self.batch_size, (self.index % n + 1) * self.batch_size)
    self.index += 1
    ids, mask = self.ids[rows], self.mask[rows]
    B, L = ids.shape
    target = np.concatenate([ids[:, 1:], np.zeros((B, 1), np.int32)], axis=1)
    loss_mask = np.concatenate([mask[:, 1:], np.zeros((B, 1), np.float32)], axis=1)
    return dict(
        input_ids=ids,
        target_ids=target,
        loss_mask=loss_mask,
        segment_ids=np.ones((B, L), np.int32),
        positions=np.tile(np.arange(L, dtype=np.int32), (B, 1)),
    )

  def get_state(self):
    return {"index": self.index}

  def set_state(self, state):
    self.index = state["index"]


def _greedy(model, prompts, new_tokens):
  ids = jnp.asarray(prompts)
  step = jax.jit(lambda x: jnp.argmax(model(x)[:, -1], axis=-1).astype(jnp.int32))
  for _ in range(new_tokens):
    ids = jnp.concatenate([ids, step(ids)[:, None]], axis=1)
  return np.asarray(ids)


@pytest.mark.slow
def test_distillation_beats_sft_on_the_teachers_greedy_outputs_at_equal_steps(tmp_path):
  """Same student, same sequences (prompts + the teacher's greedy continuations), same steps:
  one run learns from the tokens only (SFT), the other also from the teacher's distribution
  at every position (KD, alpha 0.5). Held-out KL(teacher || student) on new prompts must fall
  further with KD."""
  mesh = _one_device()
  # Large weights: a confident teacher whose distributions are far from the fresh student's.
  teacher_cfg = dataclasses.replace(TEACHER, vocab_size=STUDENT.vocab_size, initializer_range=0.25)
  teacher = create_model(teacher_cfg, mesh, seed=7)
  teacher_dir = checkpoints.save_model(teacher, str(tmp_path / "teacher"))
  rng = np.random.default_rng(0)
  prompt_len, new = 8, 24

  def sequences(n):
    return _greedy(teacher, rng.integers(0, STUDENT.vocab_size, (n, prompt_len), np.int32), new)

  train_ids, held_out = sequences(64), sequences(32)
  mask = np.zeros(train_ids.shape, np.float32)
  mask[:, prompt_len:] = 1  # the continuation is the "response"

  steps = 40
  base = tiny_train_config(
      steps=steps,
      data=dataclasses.replace(tiny_train_config().data, seq_len=prompt_len + new, batch_size=8),
      checkpoint=CheckpointConfig(every_steps=1000, keep=1, async_save=False),
  )
  sft = train(base, str(tmp_path / "sft"), _Rows(train_ids, mask, 8), mesh=mesh, progress=False)
  kd_cfg = dataclasses.replace(base, frozen={"teacher": FrozenModelConfig(path=teacher_dir)})
  kd = train(
      kd_cfg,
      str(tmp_path / "kd"),
      _Rows(train_ids, mask, 8),
      mesh=mesh,
      loss=KDLoss(alpha=0.5, total_steps=steps, chunk=16),
      progress=False,
  )

  def held_out_kl(params):
    student = nnx.merge(sft.graphdef, params)
    s = np.asarray(student(jnp.asarray(held_out)), np.float64)[:, prompt_len - 1 : -1]
    t = np.asarray(teacher(jnp.asarray(held_out)), np.float64)[:, prompt_len - 1 : -1]
    logp, logq = _f64_log_softmax(t), _f64_log_softmax(s)
    return float((np.exp(logp) * (logp - logq)).sum(-1).mean())

  start = held_out_kl(nnx.state(create_model(STUDENT, mesh, seed=0)))
  kl_sft, kl_kd = held_out_kl(sft.state.params), held_out_kl(kd.state.params)
  print(
      f"held-out KL(teacher || student) after {steps} steps: start {start:.3f}, "
      f"SFT on greedy outputs {kl_sft:.3f}, KD {kl_kd:.3f}"
  )
  assert kl_kd < kl_sft and kl_kd < start
