"""Per-token logit divergences between a student and a teacher: dense and sparse (top-k).

Pure float32 functions on `[..., V]` (or `[..., K]`) inputs returning one value per token,
`[...]`: no masking and no reduction over tokens (the caller masks, sums and normalises once).
All are traceable under `jax.jit`; `temperature` may be a traced scalar (a schedule), the
divergence kind, the tail treatment and `beta` are static Python values.

Notation: p is the teacher, q the student, both softened by the same temperature T,
p = softmax(t / T), q = softmax(s / T). Every divergence is multiplied by T^2 inside (Hinton et
al. 2015: keeps gradient magnitudes comparable across temperatures; T = 1 leaves it unchanged).

  forward KL   KL(p || q) = sum_i p_i (log p_i - log q_i)                  (mean-seeking)
  reverse KL   KL(q || p) = sum_i q_i (log q_i - log p_i)                  (mode-seeking)
  JSD(beta)    M = beta p + (1 - beta) q,
               JSD_beta = beta KL(p || M) + (1 - beta) KL(q || M)

JSD(beta) follows the GKD paper (Agarwal et al. 2024, eq. 1) and TRL's `GKDTrainer.
generalized_jsd_loss` with P the teacher: M = beta p_t + (1 - beta) p_s. As beta -> 0,
JSD_beta / beta -> KL(p || q) and as beta -> 1, JSD_beta / (1 - beta) -> KL(q || p); JSD_beta
itself tends to 0 at both ends, so, as TRL does, beta = 0 and beta = 1 exactly are defined as
forward and reverse KL (unscaled). TRL does not multiply its JSD by T^2; here every kind is.

0 log 0 = 0 everywhere: a zero-probability teacher outcome contributes nothing and produces no
NaN in the value or the gradient. Log-probabilities come from `log_softmax`, never log(softmax).

Sparse teacher (offline store or an API's top-k log-probs): `teacher_ids [..., K]` int32,
`teacher_logprobs [..., K]` = log p_t(id) under the teacher's full softmax, and
`tail_logmass [...]` = log(1 - sum_k p_t(id_k)), the mass outside the top-k. The student keeps
its full logits `[..., V]`; `log q_k` below is its full-softmax log-probability gathered at
`id_k`, and its own tail is log q_tail = logsumexp over the logits outside the top-k minus the
logsumexp over all V (exact: no log1p(-sum), which loses everything when the top-k hold nearly
all the mass). `TailTreatment` says what becomes of the teacher mass outside the top-k; the
formulas are in its docstring. Ids must be distinct and < V (not checked: traced values).
"""

from __future__ import annotations

import enum
import numbers

import jax
import jax.numpy as jnp


class Divergence(enum.Enum):
  FORWARD_KL = "forward_kl"  # KL(teacher || student)
  REVERSE_KL = "reverse_kl"  # KL(student || teacher)
  JSD = "jsd"  # generalised Jensen-Shannon, interpolation weight beta on the teacher


class TailTreatment(enum.Enum):
  """What a sparse (top-k) teacher's mass outside its top-k becomes.

  RENORMALISE  the teacher is renormalised over its top-k, p^_k = p_k / sum_j p_j, and is zero
               elsewhere; the student keeps its whole distribution, so its mass outside the
               top-k is a mismatch. Over the full vocabulary this is exact:
                 forward  sum_k p^_k (log p^_k - log q_k)
                 JSD      K+1 outcomes: (p^_1..p^_K, 0) against (q_1..q_K, q_tail)
                 reverse  KL(q || p^) is +inf whenever q_tail > 0, so reverse KL compares the
                          two distributions renormalised over the top-k:
                          sum_k q^_k (log q^_k - log p^_k),  q^_k = q_k / sum_j q_j
               With T != 1: p^ = softmax(log p_k / T over k), exactly the tempered teacher
               restricted to its top-k (p_k^(1/T) is proportional to exp(t_k / T)).
  BUCKET       K+1 outcomes: the top-k tokens and one tail bucket holding all the rest.
                 teacher (p_1..p_K, p_tail), student (q_1..q_K, q_tail); any divergence on them.
               The teacher vector is renormalised (log_softmax over the K+1 log-masses), which
               is the identity for a consistent store and absorbs storage rounding otherwise.
               With T != 1 the tail is softened as one outcome: (p_1..p_K, p_tail)^(1/T)
               renormalised. This underestimates the tempered tail for T > 1 (sum_j p_j^(1/T)
               >= (sum_j p_j)^(1/T)): the tail's individual tokens are not known.
  IGNORE       the reference code (EasyDistill kd/train.py, the DistilQwen2.5 recipe): the
               stored top-k probabilities, unnormalised, against the student's full-softmax
               log-probabilities; the teacher's tail and the student's tail are dropped.
                 forward  sum_k p_k (log p_k - log q_k)
               It is not a divergence (can be negative when the student beats the teacher on
               the top-k); its gradient w.r.t. the student logits is that of the cross-entropy
               -sum_k p_k log q_k. Forward KL only, temperature 1 only (the reference has none).
  With K = V there is no tail: every treatment but IGNORE's is the dense divergence.
  """

  RENORMALISE = "renormalise"
  BUCKET = "bucket"
  IGNORE = "ignore"


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def kl_from_logprobs(logp: jax.Array, logq: jax.Array) -> jax.Array:
  """sum_i p_i (log p_i - log q_i) over the last axis, with 0 log 0 = 0 (no NaN in value or
  gradient where p_i = 0). p need not be normalised (IGNORE uses that). +inf where p_i > 0 and
  q_i = 0."""
  has_mass = logp > -jnp.inf
  safe_logp = jnp.where(has_mass, logp, 0.0)
  safe_logq = jnp.where(has_mass, logq, 0.0)
  return jnp.sum(jnp.where(has_mass, jnp.exp(safe_logp) * (safe_logp - safe_logq), 0.0), axis=-1)


def jsd_from_logprobs(logp: jax.Array, logq: jax.Array, beta: float) -> jax.Array:
  """beta KL(p || M) + (1 - beta) KL(q || M), M = beta p + (1 - beta) q, for 0 < beta < 1.
  log M is a logsumexp of the two weighted log-probabilities (no log of a sum of probs)."""
  both = jnp.stack([logp + jnp.log(beta), logq + jnp.log1p(-beta)])
  empty = jnp.all(both == -jnp.inf, axis=0)  # an outcome neither side has: log M = -inf, and
  log_m = jnp.where(
      empty,
      -jnp.inf,  # no 0/0 in logsumexp's gradient
      jax.nn.logsumexp(jnp.where(empty, 0.0, both), axis=0),
  )
  return beta * kl_from_logprobs(logp, log_m) + (1.0 - beta) * kl_from_logprobs(logq, log_m)


def _check_beta(beta: float):
  if not isinstance(beta, numbers.Real) or not 0.0 <= beta <= 1.0:
    raise ValueError(f"JSD beta must be a Python number in [0, 1], got {beta!r}")


def _divergence_from_logprobs(kind: Divergence, logp, logq, beta: float):
  """Teacher log-probs `logp`, student `logq`, same support; unscaled."""
  if kind is Divergence.JSD:
    _check_beta(beta)
    if beta == 0.0:
      kind = Divergence.FORWARD_KL
    elif beta == 1.0:
      kind = Divergence.REVERSE_KL
    else:
      return jsd_from_logprobs(logp, logq, float(beta))
  if kind is Divergence.FORWARD_KL:
    return kl_from_logprobs(logp, logq)
  if kind is Divergence.REVERSE_KL:
    return kl_from_logprobs(logq, logp)
  raise ValueError(f"unknown divergence {kind!r}; choose from {[d.value for d in Divergence]}")


def dense_divergence(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    *,
    kind: Divergence,
    temperature: float | jax.Array = 1.0,
    beta: float = 0.5,
) -> jax.Array:
  """T^2 * D(p || q) per token, `[..., V]` x `[..., V]` -> `[...]`, with p = softmax(t / T),
  q = softmax(s / T) and D the forward KL, reverse KL or JSD(beta) of the module docstring.
  Both logits must already be aligned to the same vocabulary (see `aligned_vocab`)."""
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(
        f"student logits {student_logits.shape} and teacher logits "
        f"{teacher_logits.shape} differ; slice both to the shared vocabulary first"
    )
  t = _f32(temperature)
  logq = jax.nn.log_softmax(_f32(student_logits) / t, axis=-1)
  logp = jax.nn.log_softmax(_f32(teacher_logits) / t, axis=-1)
  return t * t * _divergence_from_logprobs(kind, logp, logq, beta)


def forward_kl(
    student_logits: jax.Array, teacher_logits: jax.Array, *, temperature: float | jax.Array = 1.0
) -> jax.Array:
  """T^2 KL(p_t || p_s) per token."""
  return dense_divergence(
      student_logits, teacher_logits, kind=Divergence.FORWARD_KL, temperature=temperature
  )


def reverse_kl(
    student_logits: jax.Array, teacher_logits: jax.Array, *, temperature: float | jax.Array = 1.0
) -> jax.Array:
  """T^2 KL(p_s || p_t) per token."""
  return dense_divergence(
      student_logits, teacher_logits, kind=Divergence.REVERSE_KL, temperature=temperature
  )


def generalised_jsd(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    *,
    beta: float,
    temperature: float | jax.Array = 1.0,
) -> jax.Array:
  """T^2 JSD_beta(p_t, p_s) per token, M = beta p_t + (1 - beta) p_s (GKD / TRL); beta = 0 is
  forward KL, beta = 1 reverse KL."""
  return dense_divergence(
      student_logits, teacher_logits, kind=Divergence.JSD, temperature=temperature, beta=beta
  )


def student_topk_logprobs(
    student_logits: jax.Array,
    teacher_ids: jax.Array,
    temperature: float | jax.Array = 1.0,
    present: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array | None]:
  """(log q at the ids `[..., K]`, log q_tail `[...]`) of q = softmax(s / T) over all V.

  log q_tail = logsumexp(s / T over the tokens not in the ids) - logsumexp(s / T): exact even
  when the ids hold all but 1e-30 of the mass. None when K == V (no tail exists).
  `present [..., K]` (bool): slots that are part of the teacher's top-k. An absent slot (a
  padding id with teacher log-prob -inf, e.g. from an API store) is treated as outside the
  top-k: log q there is -inf and the student's mass on that id counts in its tail."""
  z = _f32(student_logits) / _f32(temperature)
  lse = jax.nn.logsumexp(z, axis=-1)
  z_k = jnp.take_along_axis(z, teacher_ids, axis=-1)
  logq_k = z_k - lse[..., None]
  if teacher_ids.shape[-1] == z.shape[-1]:
    return logq_k, None
  if present is None:
    outside = jnp.put_along_axis(z, teacher_ids, -jnp.inf, axis=-1, inplace=False)
  else:
    outside = jnp.put_along_axis(
        z, teacher_ids, jnp.where(present, -jnp.inf, z_k), axis=-1, inplace=False
    )
    logq_k = jnp.where(present, logq_k, -jnp.inf)
  return logq_k, jax.nn.logsumexp(outside, axis=-1) - lse


def _check_sparse_shapes(student_logits, teacher_ids, teacher_logprobs, tail_logmass):
  lead, k = student_logits.shape[:-1], teacher_ids.shape[-1]
  if (
      teacher_ids.shape != teacher_logprobs.shape
      or teacher_ids.shape[:-1] != lead
      or tuple(tail_logmass.shape) != lead
  ):
    raise ValueError(
        f"sparse teacher shapes do not match the student logits {student_logits.shape}: "
        f"ids {teacher_ids.shape}, log-probs {teacher_logprobs.shape}, tail {tail_logmass.shape}"
        f" (want [..., K], [..., K], [...] with the student's leading dims)"
    )
  if k > student_logits.shape[-1]:
    raise ValueError(f"top-k K={k} exceeds the student vocabulary V={student_logits.shape[-1]}")
  if not jnp.issubdtype(teacher_ids.dtype, jnp.integer):
    raise ValueError(f"teacher ids must be integers, got {teacher_ids.dtype}")


def sparse_divergence(
    student_logits: jax.Array,
    teacher_ids: jax.Array,
    teacher_logprobs: jax.Array,
    tail_logmass: jax.Array,
    *,
    kind: Divergence,
    tail: TailTreatment,
    temperature: float | jax.Array = 1.0,
    beta: float = 0.5,
) -> jax.Array:
  """T^2 D(teacher || student) per token against a top-k teacher; `[...]`.

  `student_logits [..., V]` float, `teacher_ids [..., K]` int, `teacher_logprobs [..., K]`
  (log p_t over the teacher's full vocabulary), `tail_logmass [...]` = log of the teacher mass
  outside the top-k (may be -inf). `tail` picks the treatment (formulas: `TailTreatment`);
  JSD with beta = 0 / 1 is that treatment's forward / reverse KL."""
  _check_sparse_shapes(student_logits, teacher_ids, teacher_logprobs, tail_logmass)
  if kind is Divergence.JSD:
    _check_beta(beta)
    kind = {0.0: Divergence.FORWARD_KL, 1.0: Divergence.REVERSE_KL}.get(float(beta), kind)
  if tail is TailTreatment.IGNORE:
    if kind is not Divergence.FORWARD_KL:
      raise ValueError(
          f"tail treatment IGNORE defines forward KL only, not {kind.value}; "
          "use RENORMALISE or BUCKET"
      )
    if not (isinstance(temperature, numbers.Real) and temperature == 1):
      raise ValueError(
          "tail treatment IGNORE reproduces the reference code, which has no "
          f"temperature: pass temperature=1.0, not {temperature!r}"
      )
    logq_k, _ = student_topk_logprobs(student_logits, teacher_ids)
    return kl_from_logprobs(_f32(teacher_logprobs), logq_k)

  t = _f32(temperature)
  # Slots at teacher log-prob -inf are padding (an API store with fewer than K mappable
  # alternatives): outside the top-k on both sides. No slot present: RENORMALISE gives 0.
  present = _f32(teacher_logprobs) > -jnp.inf
  none = ~jnp.any(present, axis=-1, keepdims=True)
  logq_k, logq_tail = student_topk_logprobs(student_logits, teacher_ids, t, present)
  scaled_k = _f32(teacher_logprobs) / t
  if tail is TailTreatment.RENORMALISE:
    scaled_k, logq_k = jnp.where(none, 0.0, scaled_k), jnp.where(none, 0.0, logq_k)
    logp_k = jax.nn.log_softmax(scaled_k, axis=-1)
    if kind is Divergence.REVERSE_KL:  # over the top-k support (the full-vocab one is +inf)
      value = kl_from_logprobs(jax.nn.log_softmax(logq_k, axis=-1), logp_k)
      return jnp.where(none[..., 0], 0.0, t * t * value)
    if logq_tail is None:
      logp, logq = logp_k, logq_k
    else:  # the teacher's tail outcome has zero mass
      logp = jnp.concatenate([logp_k, jnp.full_like(logp_k[..., :1], -jnp.inf)], axis=-1)
      logq = jnp.concatenate([logq_k, logq_tail[..., None]], axis=-1)
    value = _divergence_from_logprobs(kind, logp, logq, beta)
    return jnp.where(none[..., 0], 0.0, t * t * value)
  elif tail is TailTreatment.BUCKET:
    if logq_tail is None:
      logp, logq = jax.nn.log_softmax(scaled_k, axis=-1), logq_k
    else:
      scaled_tail = _f32(tail_logmass)[..., None] / t
      logp = jax.nn.log_softmax(jnp.concatenate([scaled_k, scaled_tail], axis=-1), axis=-1)
      logq = jnp.concatenate([logq_k, logq_tail[..., None]], axis=-1)
  else:
    raise ValueError(
        f"unknown tail treatment {tail!r}; " f"choose from {[x.value for x in TailTreatment]}"
    )
  return t * t * _divergence_from_logprobs(kind, logp, logq, beta)


def aligned_vocab(student_vocab: int, teacher_vocab: int, real_tokens: int) -> int:
  """How many leading logit columns a student and a teacher share: min of the three.

  Qwen2.5 pads its embedding to 151,936 rows (0.5B-3B) or 152,064 (7B-72B) while the tokenizer
  has 151,665 real tokens; the rows past `real_tokens` are padding no text ever produces. The
  caller slices both logits to `[..., :n]` before a dense divergence, so each softmax runs over
  the real tokens only."""
  for name, value in (
      ("student_vocab", student_vocab),
      ("teacher_vocab", teacher_vocab),
      ("real_tokens", real_tokens),
  ):
    if not isinstance(value, numbers.Integral) or value <= 0:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  if real_tokens > student_vocab or real_tokens > teacher_vocab:
    raise ValueError(
        f"the tokenizer has {real_tokens} tokens but the student's vocabulary has "
        f"{student_vocab} rows and the teacher's {teacher_vocab}: a model must have "
        "a row for every token"
    )
  return min(student_vocab, teacher_vocab, real_tokens)


def cosine_distance(student_h: jax.Array, teacher_h: jax.Array, *, eps: float = 1e-8) -> jax.Array:
  """1 - cos(a, b) per token, `[..., D]` x `[..., D]` -> `[...]`, in [0, 2].

  cos(a, b) = a.b / (max(|a|, eps) max(|b|, eps)); the norms are taken as rsqrt(max(|a|^2,
  eps^2)), so a zero vector gives distance 1 and a finite gradient, never NaN."""
  a, b = _f32(student_h), _f32(teacher_h)
  inv_a = jax.lax.rsqrt(jnp.maximum(jnp.sum(a * a, axis=-1), eps * eps))
  inv_b = jax.lax.rsqrt(jnp.maximum(jnp.sum(b * b, axis=-1), eps * eps))
  return 1.0 - jnp.sum(a * b, axis=-1) * inv_a * inv_b


def rms_normalised_mse(
    student_h: jax.Array, teacher_h: jax.Array, *, eps: float = 1e-6
) -> jax.Array:
  """mean_d (a^_d - b^_d)^2 per token with x^ = x / sqrt(mean_d x_d^2 + eps).

  Each vector is divided by its root-mean-square (as an RMSNorm without a gain; eps as Qwen2's
  1e-6), so the distance ignores the scale of the residual stream, which grows with depth and
  differs between a student and a teacher, and compares directions and relative magnitudes
  across features; in [0, 4]."""
  a, b = _f32(student_h), _f32(teacher_h)
  a = a * jax.lax.rsqrt(jnp.mean(a * a, axis=-1, keepdims=True) + eps)
  b = b * jax.lax.rsqrt(jnp.mean(b * b, axis=-1, keepdims=True) + eps)
  return jnp.mean(jnp.square(a - b), axis=-1)
