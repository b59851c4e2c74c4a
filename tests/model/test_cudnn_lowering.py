"""The cuDNN attention paths lower for CUDA on a machine without a GPU, to the fused kernels.

A CPU-only jaxlib lowers for `cuda` once cuDNN's version and the GPU's compute capability are
answered as on an H100 (cuDNN 9.10, capability 9.0). Under a mesh the kernel is wrapped in a
custom partitioning, which XLA's SPMD partitioner expands: the CPU compiler runs that
partitioner and only then refuses the cuDNN calls, so its dump shows the per-device program.
"""

import pathlib
import re

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from distil_jax.model import AttentionImpl, ModelConfig
from distil_jax.model.attention import cudnn_attention, self_attention
from distil_jax.sharding import MeshConfig, make_mesh, use_mesh
from distil_jax.train.config import DataConfig, TrainConfig
from distil_jax.train.losses import SFTLoss
from distil_jax.train.objective import apply_loss
from distil_jax.train.optim import make_optimizer
from distil_jax.train.state import abstract_train_state
from distil_jax.train.step import batch_sharding, jit_train_step

FORWARD, BACKWARD = "__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"
BIAS_FORWARD, BIAS_BACKWARD = "__cudnn$fmhaScaleBiasSoftmax", "__cudnn$fmhaScaleBiasSoftmaxBackward"


def _capability(text: str) -> tuple[int, ...]:
  return tuple(int(x) for x in text.split("."))


@pytest.fixture(autouse=True)
def as_on_an_h100(monkeypatch):
  monkeypatch.setattr(cudnn_attention, "check_cudnn_version", lambda: 91000)
  monkeypatch.setattr(
      cudnn_attention, "check_compute_capability", lambda c: _capability(c) <= (9, 0)
  )
  monkeypatch.setattr(
      cudnn_attention, "is_cuda_compute_capability_equal", lambda c: _capability(c) == (9, 0)
  )


def _cudnn_calls(text: str) -> set[str]:
  return set(re.findall(r"__cudnn\$\w+", text))


def _square(text: str, t: int) -> list[str]:
  """Tensors whose last two dimensions are [t, t] (StableHLO and HLO spellings)."""
  return re.findall(rf"tensor<[0-9x]*{t}x{t}x\w+>|\w+\[[0-9,]*{t},{t}\]", text)


def _backend_values(text: str, key: str) -> set[str]:
  """Values of `key` in the kernels' backend configs (JSON, escaped in StableHLO text)."""
  return set(re.findall(rf'"{key}":\s*"?(\w+)', text.replace("\\22", '"')))


# --- one attention call, one device ------------------------------------------------------
B, T, N, K, H, DOCS = 2, 256, 4, 2, 64, 3


def _segments():
  rows = [[1] * 100 + [2] * 60 + [3] * 40 + [0] * 56, [1] * T]
  return jnp.asarray(rows, jnp.int32)


def _lower_attention_with_gradient(segment_ids, max_segments_per_row: int) -> str:
  def loss(q, k, v):
    out = self_attention(
        AttentionImpl.CUDNN, q, k, v, None, segment_ids, max_segments_per_row=max_segments_per_row
    )
    return jnp.sum(out.astype(jnp.float32) ** 2)

  q = jax.ShapeDtypeStruct((B, T, N, H), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((B, T, K, H), jnp.bfloat16)
  f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
  return f.trace(q, kv, kv).lower(lowering_platforms=("cuda",)).as_text()


def test_unpacked_rows_use_the_plain_causal_kernel_with_no_t_by_t_tensor():
  text = _lower_attention_with_gradient(None, 0)
  assert _cudnn_calls(text) == {FORWARD, BACKWARD}
  assert _backend_values(text, "mask_type") == {"CAUSAL"}
  assert _square(text, T) == []


def test_dense_mask_path_sends_a_bf16_bias_and_gets_its_gradient_back():
  text = _lower_attention_with_gradient(_segments(), 0)
  assert _cudnn_calls(text) == {BIAS_FORWARD, BIAS_BACKWARD}
  assert set(_square(text, T)) >= {f"tensor<{B}x1x{T}x{T}xbf16>"}  # bias in, dbias out
  assert not [s for s in _square(text, T) if "f32" in s]


def test_ragged_path_uses_the_plain_kernel_with_offsets_and_no_t_by_t_tensor():
  text = _lower_attention_with_gradient(_segments(), DOCS)
  assert _cudnn_calls(text) == {FORWARD, BACKWARD}
  assert _backend_values(text, "mask_type") == {"PADDING_CAUSAL"}
  assert _backend_values(text, "max_seg_per_batch") == {str(DOCS + 1)}  # + the padding run
  assert _square(text, T) == []


# --- the whole SFT train step, FSDP over 8 devices ---------------------------------------
STEP_B, STEP_T = 8, 256  # T differs from every model width, so [T, T] means attention


def _lower_and_partition_train_step(tmp_path: pathlib.Path, max_segments_per_row: int) -> str:
  model = ModelConfig.tiny(
      attention_impl=AttentionImpl.CUDNN,
      compute_dtype=jnp.bfloat16,
      max_segments_per_row=max_segments_per_row,
  )
  cfg = TrainConfig(
      model=model,
      mesh=MeshConfig(data=1, fsdp=8),
      loss_chunk=64,
      steps=10,
      data=DataConfig(seq_len=STEP_T, batch_size=STEP_B),
  )
  mesh = make_mesh(cfg.mesh)
  tx, schedule = make_optimizer(cfg.optim, cfg.steps)
  with use_mesh(mesh, cfg.rules):
    graphdef, _, state = abstract_train_state(cfg, mesh, tx)
    step = jit_train_step(
        graphdef=graphdef,
        loss=SFTLoss(chunk=cfg.loss_chunk),
        tx=tx,
        schedule=schedule,
        grad_accum=1,
        mesh=mesh,
        rules=cfg.rules,
        state_sharding=jax.tree.map(lambda a: a.sharding, state),
    )
    rows = batch_sharding(mesh, cfg.rules)
    batch = {
        key: jax.ShapeDtypeStruct((STEP_B, STEP_T), dtype, sharding=rows)
        for key, dtype in (
            ("input_ids", jnp.int32),
            ("target_ids", jnp.int32),
            ("loss_mask", jnp.float32),
            ("segment_ids", jnp.int32),
            ("positions", jnp.int32),
        )
    }
    rng = jax.ShapeDtypeStruct(
        (), jax.random.key(0).dtype, sharding=NamedSharding(mesh, PartitionSpec())
    )
    lowered = step.trace(state, batch, rng, {}).lower(lowering_platforms=("cuda",))
  assert "CustomSPMDPartitioning" in lowered.as_text()  # expanded by the partitioner below
  dump = tmp_path / "hlo"
  with pytest.raises(jax.errors.JaxRuntimeError, match=r"__cudnn\$fmha"):
    lowered.compile({"xla_dump_to": str(dump), "xla_dump_hlo_pass_re": "spmd-partitioning"})
  (partitioned,) = dump.glob("*train_step*after_spmd-partitioning*")
  return partitioned.read_text()


def _kernel_batch(hlo: str, target: str) -> int:
  """The batch size the named kernel sees (its query operand's leading dimension)."""
  line = next(l for l in hlo.splitlines() if f'custom_call_target="{target}"' in l)
  return int(re.search(r"operand_layout_constraints=\{bf16\[(\d+),", line).group(1))


def test_train_step_dense_mask_path_partitions_to_per_device_cudnn_kernels(tmp_path):
  hlo = _lower_and_partition_train_step(tmp_path, 0)
  assert _cudnn_calls(hlo) == {BIAS_FORWARD, BIAS_BACKWARD}
  assert _kernel_batch(hlo, BIAS_FORWARD) == _kernel_batch(hlo, BIAS_BACKWARD) == STEP_B // 8
  assert f"bf16[1,1,{STEP_T},{STEP_T}]" in hlo  # each device's bias
  assert not [s for s in _square(hlo, STEP_T) if s.startswith("f32")]


def test_train_step_ragged_path_partitions_with_no_t_by_t_tensor(tmp_path):
  hlo = _lower_and_partition_train_step(tmp_path, 4)
  assert _cudnn_calls(hlo) == {FORWARD, BACKWARD}
  assert _kernel_batch(hlo, FORWARD) == _kernel_batch(hlo, BACKWARD) == STEP_B // 8
  assert _square(hlo, STEP_T) == []


# --- remat: the attention kernel runs once forward ----------------------------------------
@pytest.mark.parametrize("remat", ["none", "dots", "dots_no_batch", "full"])
def test_dots_remat_saves_the_attention_kernel_instead_of_running_it_again(remat):
  """A `dots` policy alone would not save the fused kernel (a custom call, not a dot), so the
  backward pass would run the attention forward a second time. `full` recomputes it by design."""
  from flax import nnx
  from distil_jax.model.config import RematPolicy
  from distil_jax.model.qwen2 import Qwen2

  cfg = ModelConfig.tiny(
      compute_dtype=jnp.bfloat16,
      attention_impl=AttentionImpl.CUDNN,
      remat_policy=RematPolicy(remat),
  )
  graphdef, params = nnx.split(nnx.eval_shape(lambda: Qwen2(cfg, rngs=nnx.Rngs(0))))
  rows = jax.ShapeDtypeStruct((2, 128), jnp.int32)
  batch = dict(
      input_ids=rows,
      target_ids=rows,
      segment_ids=rows,
      positions=rows,
      loss_mask=jax.ShapeDtypeStruct((2, 128), jnp.float32),
  )

  def loss(p, b):
    return apply_loss(SFTLoss(chunk=64), nnx.merge(graphdef, p), b)[0]

  text = jax.jit(jax.grad(loss)).trace(params, batch).lower(lowering_platforms=("cuda",)).as_text()
  forward = len(re.findall(re.escape(BIAS_FORWARD) + r"\b", text))
  backward = len(re.findall(re.escape(BIAS_BACKWARD) + r"\b", text))
  assert (forward, backward) == ((2, 1) if remat == "full" else (1, 1))
