"""Every divergence, tail treatment and hidden-state distance equals a float64 NumPy reference of
its published formula, value and gradient (central differences on the float64 formula)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distil_jax.train.divergences import (
    Divergence,
    TailTreatment,
    aligned_vocab,
    cosine_distance,
    dense_divergence,
    forward_kl,
    generalised_jsd,
    reverse_kl,
    rms_normalised_mse,
    sparse_divergence,
    student_topk_logprobs,
)

SHAPES = [(5, 50), (2, 3, 130), (300,)]  # leading dims of every rank, small vocabularies
TEMPERATURES = [1.0, 2.0]
BETAS = [0.1, 0.5, 0.9]


# ---- float64 references, written from the formulas -------------------------------------------


def np_log_softmax(z):
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_kl(p, q):
  """sum p log(p / q) with 0 log 0 = 0."""
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
  return terms.sum(axis=-1)


def np_jsd(p, q, beta):
  m = beta * p + (1 - beta) * q
  return beta * np_kl(p, m) + (1 - beta) * np_kl(q, m)


def np_dense(kind, s, t, temperature, beta):
  p = np.exp(np_log_softmax(t / temperature))
  q = np.exp(np_log_softmax(s / temperature))
  d = {
      Divergence.FORWARD_KL: lambda: np_kl(p, q),
      Divergence.REVERSE_KL: lambda: np_kl(q, p),
      Divergence.JSD: lambda: np_jsd(p, q, beta),
  }[kind]()
  return temperature**2 * d


def np_sparse(kind, tail, s, ids, logprobs, tail_logmass, temperature, beta):
  """The treatments as `TailTreatment` states them, on explicit probability vectors."""
  q = np.exp(np_log_softmax(s / temperature))
  q_k = np.take_along_axis(q, ids, axis=-1)
  outside = np.ones_like(q, dtype=bool)
  np.put_along_axis(outside, ids, False, axis=-1)
  q_tail = np.where(outside, q, 0.0).sum(axis=-1, keepdims=True)  # summed, not 1 - sum
  soft_k = np.exp(logprobs) ** (1 / temperature)
  if tail is TailTreatment.IGNORE:
    return np_kl(np.exp(logprobs), q_k)
  if tail is TailTreatment.RENORMALISE:
    p_hat = soft_k / soft_k.sum(axis=-1, keepdims=True)
    if kind is Divergence.REVERSE_KL:
      d = np_kl(q_k / q_k.sum(axis=-1, keepdims=True), p_hat)
    else:  # over the full vocabulary: the teacher is zero outside its top-k
      p_full = np.zeros_like(q)
      np.put_along_axis(p_full, ids, p_hat, axis=-1)
      d = np_kl(p_full, q) if kind is Divergence.FORWARD_KL else np_jsd(p_full, q, beta)
    return temperature**2 * d
  p = np.concatenate([soft_k, np.exp(tail_logmass)[..., None] ** (1 / temperature)], axis=-1)
  p = p / p.sum(axis=-1, keepdims=True)
  qq = np.concatenate([q_k, q_tail], axis=-1)
  d = {
      Divergence.FORWARD_KL: lambda: np_kl(p, qq),
      Divergence.REVERSE_KL: lambda: np_kl(qq, p),
      Divergence.JSD: lambda: np_jsd(p, qq, beta),
  }[kind]()
  return temperature**2 * d


def np_cosine_distance(a, b):
  return 1 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def np_rms_mse(a, b, eps=1e-6):
  a = a / np.sqrt((a**2).mean(-1, keepdims=True) + eps)
  b = b / np.sqrt((b**2).mean(-1, keepdims=True) + eps)
  return ((a - b) ** 2).mean(-1)


def fd_grad(per_token_fn, x, weights, h=1e-5):
  """d/dx of sum(weights * per_token_fn(x)) by central differences in float64. Tokens are
  independent, so coordinate j of every token is perturbed at once."""
  x = np.asarray(x, np.float64)
  grad = np.zeros_like(x)
  for j in range(x.shape[-1]):
    e = np.zeros_like(x)
    e[..., j] = h
    grad[..., j] = weights * (per_token_fn(x + e) - per_token_fn(x - e)) / (2 * h)
  return grad


def jax_value_and_grad(per_token_fn, x, weights):
  value = per_token_fn(jnp.asarray(x, jnp.float32))
  grad = jax.grad(lambda y: jnp.sum(jnp.asarray(weights, jnp.float32) * per_token_fn(y)))(
      jnp.asarray(x, jnp.float32)
  )
  return np.asarray(value, np.float64), np.asarray(grad, np.float64)


def assert_matches(per_token_jax, per_token_np, x, rng, rtol=2e-5, atol=2e-6, grad_atol=2e-6):
  weights = rng.uniform(0.5, 1.5, size=x.shape[:-1])
  value, grad = jax_value_and_grad(per_token_jax, x, weights)
  assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
  np.testing.assert_allclose(value, per_token_np(np.asarray(x, np.float64)), rtol=rtol, atol=atol)
  np.testing.assert_allclose(grad, fd_grad(per_token_np, x, weights), rtol=1e-3, atol=grad_atol)


def random_logits(rng, shape, scale=3.0):
  return (scale * rng.standard_normal(shape)).astype(np.float32)


# ---- dense divergences -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Divergence), ids=lambda d: d.value)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_dense_divergences_equal_the_float64_formula(kind, shape, temperature):
  rng = np.random.default_rng(hash((kind.value, shape, temperature)) % 2**32)
  s, t = random_logits(rng, shape), random_logits(rng, shape)
  betas = BETAS if kind is Divergence.JSD else [None]
  for beta in betas:
    assert_matches(
        lambda x: dense_divergence(
            x,
            jnp.asarray(t),
            kind=kind,
            temperature=temperature,
            beta=beta if beta is not None else 0.5,
        ),
        lambda x: np_dense(kind, x, t.astype(np.float64), temperature, beta),
        s,
        rng,
    )


def test_named_dense_functions_and_the_forward_kl_gradient_in_closed_form():
  """d/ds T^2 KL(p || softmax(s/T)) = T (q - p): an analytic check besides the differences."""
  rng = np.random.default_rng(1)
  s, t = random_logits(rng, (4, 60)), random_logits(rng, (4, 60))
  for temperature in TEMPERATURES:
    grad = jax.grad(lambda x: forward_kl(x, jnp.asarray(t), temperature=temperature).sum())(
        jnp.asarray(s)
    )
    p = np.exp(np_log_softmax(t.astype(np.float64) / temperature))
    q = np.exp(np_log_softmax(s.astype(np.float64) / temperature))
    np.testing.assert_allclose(grad, temperature * (q - p), atol=1e-6)
    np.testing.assert_allclose(
        reverse_kl(s, t, temperature=temperature),
        np_dense(Divergence.REVERSE_KL, s, t, temperature, None),
        rtol=2e-5,
    )
    np.testing.assert_allclose(
        generalised_jsd(s, t, beta=0.3, temperature=temperature),
        np_dense(Divergence.JSD, s, t, temperature, 0.3),
        rtol=2e-5,
    )


def test_jsd_ends_are_the_two_kls_and_its_small_beta_limits_are_their_scaled_forms():
  rng = np.random.default_rng(2)
  s, t = random_logits(rng, (6, 80), scale=1.0), random_logits(rng, (6, 80), scale=1.0)
  fwd, rev = forward_kl(s, t), reverse_kl(s, t)
  np.testing.assert_array_equal(generalised_jsd(s, t, beta=0.0), fwd)
  np.testing.assert_array_equal(generalised_jsd(s, t, beta=1.0), rev)
  # The limits, on the float64 formula (float32 cannot resolve JSD at beta = 1e-7):
  # JSD_beta / beta -> KL(p||q) as beta -> 0 and JSD_beta / (1 - beta) -> KL(q||p) as beta -> 1.
  eps = 1e-7
  s, t = s.astype(np.float64), t.astype(np.float64)
  np.testing.assert_allclose(np_dense(Divergence.JSD, s, t, 1.0, eps) / eps, fwd, rtol=1e-3)
  np.testing.assert_allclose(np_dense(Divergence.JSD, s, t, 1.0, 1 - eps) / eps, rev, rtol=1e-3)


def test_identical_distributions_have_zero_divergence_and_zero_gradient():
  t = random_logits(np.random.default_rng(3), (3, 40))
  for kind in Divergence:
    value, grad = jax.value_and_grad(
        lambda x: dense_divergence(x, jnp.asarray(t), kind=kind, temperature=2.0).sum()
    )(jnp.asarray(t))
    assert abs(float(value)) < 1e-5
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def test_a_peaked_teacher_stays_finite_and_exact():
  """A near one-hot teacher (margin 60 nats), and one with -inf logits (p = 0 exactly)."""
  rng = np.random.default_rng(4)
  s = random_logits(rng, (4, 70))
  peaked = random_logits(rng, (4, 70), scale=1.0)
  peaked[np.arange(4), rng.integers(0, 70, 4)] += 60.0
  for kind, beta in [
      (Divergence.FORWARD_KL, None),
      (Divergence.REVERSE_KL, None),
      (Divergence.JSD, 0.5),
  ]:
    assert_matches(
        lambda x: dense_divergence(x, jnp.asarray(peaked), kind=kind, beta=beta or 0.5),
        lambda x: np_dense(kind, x, peaked.astype(np.float64), 1.0, beta),
        s,
        rng,
        rtol=1e-4,
        atol=1e-4,
    )
  masked = np.where(rng.uniform(size=(4, 70)) < 0.5, -np.inf, peaked).astype(np.float32)
  masked[np.arange(4), np.argmax(peaked, -1)] = 0.0
  for kind, beta in [(Divergence.FORWARD_KL, None), (Divergence.JSD, 0.5)]:
    assert_matches(
        lambda x: dense_divergence(x, jnp.asarray(masked), kind=kind, beta=beta or 0.5),
        lambda x: np_dense(kind, x, masked.astype(np.float64), 1.0, beta),
        s,
        rng,
        rtol=1e-4,
        atol=1e-5,
    )
  assert np.all(np.isinf(reverse_kl(s, masked)))  # the student has mass where p = 0


def test_jit_and_traced_temperature():
  rng = np.random.default_rng(5)
  s, t = random_logits(rng, (2, 3, 50)), random_logits(rng, (2, 3, 50))
  f = jax.jit(
      lambda x, y, temp: dense_divergence(x, y, kind=Divergence.JSD, temperature=temp, beta=0.5)
  )
  np.testing.assert_allclose(
      f(s, t, jnp.float32(2.0)), np_dense(Divergence.JSD, s, t, 2.0, 0.5), rtol=2e-5
  )
  assert f(s, t, jnp.float32(2.0)).dtype == jnp.float32


# ---- sparse (top-k) teacher --------------------------------------------------------------------


def sparse_teacher(rng, shape, k, peak=0.0):
  """Teacher top-k from a float64 dense teacher: ids, log-probs, log tail mass (float32)."""
  t = 3.0 * rng.standard_normal(shape)
  order = np.argsort(-t, axis=-1)
  t = t + peak * (np.argsort(order, axis=-1) < k)  # push the top-k up by `peak` nats
  logp = np_log_softmax(t)
  ids = np.argsort(-logp, axis=-1)[..., :k]
  logprobs = np.take_along_axis(logp, ids, axis=-1)
  outside = np.ones(shape, bool)
  np.put_along_axis(outside, ids, False, axis=-1)
  with np.errstate(divide="ignore"):
    tail = np.log(np.where(outside, np.exp(logp), 0.0).sum(-1))
  return ids.astype(np.int32), logprobs.astype(np.float32), tail.astype(np.float32)


CASES = [
    (kind, tail)
    for tail in TailTreatment
    for kind in Divergence
    if tail is not TailTreatment.IGNORE or kind is Divergence.FORWARD_KL
]


@pytest.mark.parametrize("kind,tail", CASES, ids=lambda x: x.value)
@pytest.mark.parametrize("shape,k", [((5, 50), 5), ((2, 3, 130), 10), ((200,), 20)], ids=str)
def test_sparse_divergences_equal_the_float64_formula(kind, tail, shape, k):
  rng = np.random.default_rng(hash((kind.value, tail.value, shape)) % 2**32)
  s = random_logits(rng, shape)
  ids, logprobs, tail_logmass = sparse_teacher(rng, shape, k)
  temperatures = [1.0] if tail is TailTreatment.IGNORE else TEMPERATURES
  betas = BETAS if kind is Divergence.JSD else [None]
  for temperature, beta in itertools.product(temperatures, betas):
    assert_matches(
        lambda x: sparse_divergence(
            x,
            jnp.asarray(ids),
            jnp.asarray(logprobs),
            jnp.asarray(tail_logmass),
            kind=kind,
            tail=tail,
            temperature=temperature,
            beta=beta or 0.5,
        ),
        lambda x: np_sparse(
            kind,
            tail,
            x,
            ids,
            logprobs.astype(np.float64),
            tail_logmass.astype(np.float64),
            temperature,
            beta,
        ),
        s,
        rng,
    )


@pytest.mark.parametrize("kind,tail", CASES, ids=lambda x: x.value)
def test_top_k_holding_nearly_all_the_mass(kind, tail):
  """Teacher and student put all but ~1e-20 of their mass on the top-k: the tails are exact
  (float32 1 - sum would round the student's to 0 and its log to -inf)."""
  rng = np.random.default_rng(6)
  ids, logprobs, tail_logmass = sparse_teacher(rng, (4, 60), 6, peak=55.0)
  assert np.all(tail_logmass < -35)
  s = random_logits(rng, (4, 60), scale=1.0)
  np.put_along_axis(s, ids, np.take_along_axis(s, ids, -1) + 50.0, axis=-1)
  _, logq_tail = student_topk_logprobs(jnp.asarray(s), jnp.asarray(ids))
  outside = np.ones(s.shape, bool)
  np.put_along_axis(outside, ids, False, axis=-1)
  z = s.astype(np.float64)
  np.testing.assert_allclose(
      logq_tail,
      np.log(np.exp(np.where(outside, z, -np.inf)).sum(-1)) - np.log(np.exp(z).sum(-1)),
      atol=1e-4,
  )
  assert np.all(np.asarray(logq_tail) < -40)
  assert_matches(
      lambda x: sparse_divergence(
          x,
          jnp.asarray(ids),
          jnp.asarray(logprobs),
          jnp.asarray(tail_logmass),
          kind=kind,
          tail=tail,
          beta=0.5,
      ),
      lambda x: np_sparse(
          kind, tail, x, ids, logprobs.astype(np.float64), tail_logmass.astype(np.float64), 1.0, 0.5
      ),
      s,
      rng,
      rtol=1e-4,
      atol=1e-5,
  )


@pytest.mark.parametrize(
    "tail", [TailTreatment.RENORMALISE, TailTreatment.BUCKET], ids=lambda x: x.value
)
def test_k_equal_to_v_is_the_dense_divergence(tail):
  rng = np.random.default_rng(7)
  s, t = random_logits(rng, (3, 40)), random_logits(rng, (3, 40))
  logp = np_log_softmax(t.astype(np.float64))
  ids = np.stack([rng.permutation(40) for _ in range(3)]).astype(np.int32)  # any order
  logprobs = np.take_along_axis(logp, ids, -1).astype(np.float32)
  no_tail = np.full((3,), -np.inf, np.float32)
  for kind in Divergence:
    sparse = lambda x: sparse_divergence(
        x,
        jnp.asarray(ids),
        jnp.asarray(logprobs),
        jnp.asarray(no_tail),
        kind=kind,
        tail=tail,
        temperature=2.0,
        beta=0.3,
    )
    assert_matches(sparse, lambda x: np_dense(kind, x, t.astype(np.float64), 2.0, 0.3), s, rng)


def test_a_one_hot_sparse_teacher_with_no_tail_gives_finite_gradients():
  rng = np.random.default_rng(8)
  s = random_logits(rng, (5, 30))
  ids = rng.integers(0, 30, (5, 1)).astype(np.int32)
  zeros, no_tail = np.zeros((5, 1), np.float32), np.full((5,), -np.inf, np.float32)
  for tail, kind in [
      (TailTreatment.BUCKET, Divergence.FORWARD_KL),
      (TailTreatment.BUCKET, Divergence.JSD),
      (TailTreatment.RENORMALISE, Divergence.JSD),
      (TailTreatment.IGNORE, Divergence.FORWARD_KL),
  ]:
    assert_matches(
        lambda x: sparse_divergence(
            x, jnp.asarray(ids), jnp.asarray(zeros), jnp.asarray(no_tail), kind=kind, tail=tail
        ),
        lambda x: np_sparse(
            kind, tail, x, ids, zeros.astype(np.float64), no_tail.astype(np.float64), 1.0, 0.5
        ),
        s,
        rng,
    )
  # forward KL against a one-hot teacher is the cross-entropy of its token
  ce = -np.take_along_axis(np_log_softmax(s.astype(np.float64)), ids, -1)[..., 0]
  np.testing.assert_allclose(
      sparse_divergence(
          s, ids, zeros, no_tail, kind=Divergence.FORWARD_KL, tail=TailTreatment.RENORMALISE
      ),
      ce,
      rtol=1e-5,
  )


def test_sparse_with_all_top_k_equals_dense_top_k_restricted_softmax():
  """RENORMALISE at T: the teacher is exactly the tempered dense teacher restricted to its
  top-k (p_k^(1/T) renormalised == softmax(t/T) renormalised over the top-k)."""
  rng = np.random.default_rng(9)
  t = random_logits(rng, (3, 50)).astype(np.float64)
  ids = np.argsort(-t, -1)[..., :8]
  logprobs = np.take_along_axis(np_log_softmax(t), ids, -1)
  soft = np.exp(np.take_along_axis(t / 2.0, ids, -1))
  soft /= soft.sum(-1, keepdims=True)
  q = np.exp(np_log_softmax(np.zeros((3, 50))))  # uniform student
  want = 4.0 * np_kl(soft, np.take_along_axis(q, ids, -1))
  got = sparse_divergence(
      jnp.zeros((3, 50)),
      jnp.asarray(ids, jnp.int32),
      jnp.asarray(logprobs, jnp.float32),
      jnp.zeros((3,)),
      kind=Divergence.FORWARD_KL,
      tail=TailTreatment.RENORMALISE,
      temperature=2.0,
  )
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_sparse_jsd_ends_are_that_treatments_kls_and_jit_traces():
  rng = np.random.default_rng(10)
  s = random_logits(rng, (4, 50))
  ids, logprobs, tail_logmass = sparse_teacher(rng, (4, 50), 5)
  for tail in [TailTreatment.RENORMALISE, TailTreatment.BUCKET]:
    f = jax.jit(
        lambda x, temp, kind, beta: sparse_divergence(
            x, ids, logprobs, tail_logmass, kind=kind, tail=tail, temperature=temp, beta=beta
        ),
        static_argnums=(2, 3),
    )
    np.testing.assert_array_equal(
        f(s, 2.0, Divergence.JSD, 0.0), f(s, 2.0, Divergence.FORWARD_KL, 0.5)
    )
    np.testing.assert_array_equal(
        f(s, 2.0, Divergence.JSD, 1.0), f(s, 2.0, Divergence.REVERSE_KL, 0.5)
    )


def test_bad_inputs_are_clear_errors():
  s, ids = jnp.zeros((2, 3, 20)), jnp.zeros((2, 3, 4), jnp.int32)
  lp, tl = jnp.zeros((2, 3, 4)), jnp.zeros((2, 3))
  with pytest.raises(ValueError, match="differ"):
    forward_kl(jnp.zeros((2, 20)), jnp.zeros((2, 21)))
  with pytest.raises(ValueError, match="beta"):
    generalised_jsd(s, s, beta=1.5)
  with pytest.raises(ValueError, match="shapes"):
    sparse_divergence(
        s, ids, lp, jnp.zeros((2,)), kind=Divergence.FORWARD_KL, tail=TailTreatment.BUCKET
    )
  with pytest.raises(ValueError, match="exceeds"):
    sparse_divergence(
        s,
        jnp.zeros((2, 3, 21), jnp.int32),
        jnp.zeros((2, 3, 21)),
        tl,
        kind=Divergence.FORWARD_KL,
        tail=TailTreatment.BUCKET,
    )
  with pytest.raises(ValueError, match="forward KL only"):
    sparse_divergence(s, ids, lp, tl, kind=Divergence.REVERSE_KL, tail=TailTreatment.IGNORE)
  with pytest.raises(ValueError, match="temperature"):
    sparse_divergence(
        s, ids, lp, tl, kind=Divergence.FORWARD_KL, tail=TailTreatment.IGNORE, temperature=2.0
    )


# ---- hidden-state distances ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 16), (2, 3, 64), (96,)], ids=str)
def test_cosine_distance_equals_the_float64_formula(shape):
  rng = np.random.default_rng(11)
  a, b = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape)
  b = b.astype(np.float32)
  assert_matches(
      lambda x: cosine_distance(x, jnp.asarray(b)),
      lambda x: np_cosine_distance(x, b.astype(np.float64)),
      a,
      rng,
  )
  np.testing.assert_allclose(cosine_distance(a, 3.0 * a), 0.0, atol=1e-6)  # scale-free
  np.testing.assert_allclose(cosine_distance(a, -a), 2.0, atol=1e-6)


@pytest.mark.parametrize("shape", [(6, 16), (2, 3, 64), (96,)], ids=str)
def test_rms_normalised_mse_equals_the_float64_formula(shape):
  rng = np.random.default_rng(12)
  a = (5.0 * rng.standard_normal(shape)).astype(np.float32)
  b = (0.2 * rng.standard_normal(shape)).astype(np.float32)
  assert_matches(
      lambda x: rms_normalised_mse(x, jnp.asarray(b)),
      lambda x: np_rms_mse(x, b.astype(np.float64)),
      a,
      rng,
  )
  np.testing.assert_allclose(rms_normalised_mse(a, 7.0 * a), 0.0, atol=1e-6)  # scale-free


def test_zero_hidden_states_give_finite_distances_and_gradients():
  zero, b = jnp.zeros((2, 8)), jnp.ones((2, 8))
  for distance in (cosine_distance, rms_normalised_mse):
    value, grad = jax.value_and_grad(lambda x: distance(x, b).sum())(zero)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
  np.testing.assert_allclose(cosine_distance(zero, b), 1.0)


# ---- vocabulary alignment --------------------------------------------------------------------


def test_aligned_vocab_is_the_shared_real_vocabulary_of_qwen2p5():
  assert aligned_vocab(151_936, 152_064, 151_665) == 151_665  # 1.5B student, 7B teacher
  assert aligned_vocab(152_064, 152_064, 151_665) == 151_665
  assert aligned_vocab(64, 64, 64) == 64
  with pytest.raises(ValueError, match="151936 rows and the teacher's 151000"):
    aligned_vocab(151_936, 151_000, 151_665)
  with pytest.raises(ValueError, match="real_tokens"):
    aligned_vocab(10, 10, 0)


@pytest.mark.parametrize("kind,tail", CASES, ids=lambda x: x.value)
def test_padding_slots_at_minus_inf_are_absent_from_the_top_k(kind, tail):
  """An API store pads a position with fewer than K mappable alternatives with unused ids at
  log-prob -inf: every treatment must treat those slots as outside the top-k, i.e. equal the
  same teacher with K' < K entries (value and gradient, no NaN); a position with no entry at
  all is finite too (RENORMALISE: 0)."""
  rng = np.random.default_rng(12)
  s = random_logits(rng, (6, 40))
  ids, logprobs, tail_logmass = sparse_teacher(rng, (6, 40), 3)
  spare = np.stack([[i for i in range(40) if i not in row][:2] for row in ids]).astype(np.int32)
  padded_ids = np.concatenate([ids, spare], -1)
  padded_lp = np.concatenate([logprobs, np.full((6, 2), -np.inf, np.float32)], -1)
  temperatures = [1.0] if tail is TailTreatment.IGNORE else TEMPERATURES
  for temperature in temperatures:
    f = lambda x, i, lp: sparse_divergence(  # noqa: E731
        x,
        jnp.asarray(i),
        jnp.asarray(lp),
        jnp.asarray(tail_logmass),
        kind=kind,
        tail=tail,
        temperature=temperature,
        beta=0.3,
    )
    g = jax.grad(lambda x, i, lp: f(x, i, lp).sum())
    np.testing.assert_allclose(
        f(s, padded_ids, padded_lp), f(s, ids, logprobs), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        g(s, padded_ids, padded_lp), g(s, ids, logprobs), rtol=1e-5, atol=1e-6
    )
    empty_lp = np.full((6, 5), -np.inf, np.float32)
    value, grad = f(s, padded_ids, empty_lp), g(s, padded_ids, empty_lp)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    if tail is TailTreatment.RENORMALISE:
      np.testing.assert_array_equal(value, 0.0)
