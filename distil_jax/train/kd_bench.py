"""`distil-jax bench --config configs/kd/...`: speed and memory of the distillation step.

Times the whole KD step (the frozen teacher's forward inside it for online KD, the student's
forward and backward, the optimizer), then, each alone on the same shapes, the student's SFT
step and the teacher's forward (hidden states and its logits chunk by chunk), and reports the
KD step against their sum: 1.0 means the fused step costs exactly what the two parts cost
separately. The teacher is a random init of `--teacher_preset` (its shape is what costs), in
the dtype the config's `frozen.teacher.dtype` names (bf16 by default).
"""

from __future__ import annotations

import time


def _time(fn, args, steps: int, warmup: int, carry_state: bool):
  import jax

  compiled = fn.lower(*args).compile()
  out = None
  for i in range(warmup + steps):
    if i == warmup:
      jax.block_until_ready(out)
      t0 = time.perf_counter()
    out = compiled(*args)
    if carry_state:
      args = (out[0], *args[1:])
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / steps, compiled, out, args


def run_kd_bench(args, cfg) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from jax.sharding import NamedSharding, PartitionSpec

  from distil_jax.commands.bench import _of_ceiling, _peak_memory
  from distil_jax.model import ModelConfig, create_model
  from distil_jax.sharding import make_mesh, use_mesh
  from distil_jax.train import metrics as M
  from distil_jax.train.kd import OFFLINE_FIELDS, TEACHER
  from distil_jax.train.losses import SFTLoss
  from distil_jax.train.optim import make_optimizer
  from distil_jax.train.state import abstract_train_state, init_train_state
  from distil_jax.train.step import field_shardings, jit_train_step

  spec = cfg.frozen.get(TEACHER)
  dtype = spec.dtype if spec is not None and spec.dtype is not None else jnp.bfloat16
  teacher_cfg = ModelConfig.by_name(
      args.teacher_preset,
      param_dtype=dtype,
      compute_dtype=dtype,
      attention_impl=cfg.model.attention_impl,
  )
  B, L = cfg.data.batch_size, cfg.data.seq_len
  mesh = make_mesh(cfg.mesh)
  tx, schedule = make_optimizer(cfg.optim, cfg.steps)
  loss = cfg.loss.build(cfg).bind(cfg.model, {TEACHER: teacher_cfg})
  rng = np.random.default_rng(0)
  ids = rng.integers(
      0, min(cfg.model.vocab_size, teacher_cfg.vocab_size), (B, L + 1), dtype=np.int32
  )
  host = dict(
      input_ids=ids[:, :-1],
      target_ids=ids[:, 1:],
      loss_mask=np.ones((B, L), np.float32),
      segment_ids=np.ones((B, L), np.int32),
      positions=np.tile(np.arange(L, dtype=np.int32), (B, 1)),
  )
  if "topk_ids" in loss.fields():  # offline: a plausible top-10 per position
    k = 10
    host["topk_ids"] = rng.integers(0, cfg.model.vocab_size, (B, L, k), dtype=np.int32)
    host["topk_logprobs"] = np.sort(
        np.log(rng.dirichlet(np.ones(k + 1), (B, L))[..., :k]), axis=-1
    )[..., ::-1].astype(np.float32)
    host["topk_tail"] = np.log1p(-np.exp(host["topk_logprobs"]).sum(-1)).astype(np.float32)
    host["kd_mask"] = np.ones((B, L), np.float32)
  key = jax.device_put(jax.random.key(0), NamedSharding(mesh, PartitionSpec()))
  report = {
      "config": args.config,
      "device": jax.devices()[0].device_kind,
      "devices": mesh.devices.size,
      "batch": B,
      "seq_len": L,
      "student": {"params": cfg.model.num_params(), "vocab": cfg.model.vocab_size},
      "teacher": {
          "preset": args.teacher_preset,
          "params": teacher_cfg.num_params(),
          "vocab": teacher_cfg.vocab_size,
          "dtype": str(np.dtype(dtype)),
      },
      "source": loss.source.value,
      "fusion_pairs": loss.fusion_pairs,
  }
  with use_mesh(mesh, cfg.rules):
    frozen_graphdefs, frozen = {}, {}
    if loss.frozen_models:
      frozen_graphdefs[TEACHER], frozen[TEACHER] = nnx.split(
          create_model(teacher_cfg, mesh, cfg.rules, seed=1)
      )
    make_extra = loss.extra_module(cfg.model, {TEACHER: teacher_cfg}, cfg.seed)
    graphdef, extra_graphdef, abstract = abstract_train_state(cfg, mesh, tx, make_extra)
    shardings = jax.tree.map(lambda a: a.sharding, abstract)
    state = init_train_state(cfg, mesh, tx, abstract, make_extra)
    kd_step = jit_train_step(
        graphdef=graphdef,
        extra_graphdef=extra_graphdef,
        frozen_graphdefs=frozen_graphdefs,
        frozen_sharding=jax.tree.map(lambda a: a.sharding, frozen),
        loss=loss,
        tx=tx,
        schedule=schedule,
        grad_accum=cfg.grad_accum,
        state_sharding=shardings,
        mesh=mesh,
        rules=cfg.rules,
    )
    batch = jax.device_put(
        {k: host[k] for k in loss.fields()}, field_shardings(loss.fields(), mesh, cfg.rules)
    )
    kd_s, compiled, out, (state, *_) = _time(
        kd_step, (state, batch, key, frozen), args.steps, args.warmup, carry_state=True
    )
    peak_gb, how = _peak_memory(compiled)
    report.update(
        kd_step_s=kd_s,
        tokens_per_s=B * L / kd_s,
        peak_memory_gb=peak_gb,
        peak_memory_source=how,
        final_loss=float(out[1]["loss"]),
    )

    sft = SFTLoss(chunk=cfg.loss_chunk, logits_dtype=cfg.loss_logits_dtype)
    sft_step = jit_train_step(
        graphdef=graphdef,
        extra_graphdef=extra_graphdef,
        loss=sft,
        tx=tx,
        schedule=schedule,
        grad_accum=cfg.grad_accum,
        state_sharding=shardings,
        mesh=mesh,
        rules=cfg.rules,
    )
    sft_batch = {k: batch[k] for k in sft.fields()}
    report["student_sft_step_s"], *_ = _time(
        sft_step, (state, sft_batch, key, {}), args.steps, args.warmup, carry_state=True
    )
    if loss.frozen_models:
      from distil_jax.train.chunked import chunk_logits

      def teacher_forward(params, b):
        teacher = nnx.merge(frozen_graphdefs[TEACHER], params)
        h, _ = teacher.hidden_states(b["input_ids"], b["positions"], b["segment_ids"])
        w = teacher.unembed_matrix().astype(h.dtype)
        chunks = h.reshape(B, -1, min(cfg.loss_chunk, L), h.shape[-1]).swapaxes(0, 1)
        lse = jax.lax.map(lambda c: jax.nn.logsumexp(chunk_logits(c, w, jnp.float32), -1), chunks)
        return jnp.sum(lse)

      report["teacher_forward_s"], *_ = _time(
          jax.jit(teacher_forward),
          (frozen[TEACHER], sft_batch),
          args.steps,
          args.warmup,
          carry_state=False,
      )
      parts = report["student_sft_step_s"] + report["teacher_forward_s"]
      report["kd_step_over_parts"] = kd_s / parts
  flops = cfg.model.flops_per_token(L) + (
      teacher_cfg.flops_per_token(L) / 3 if loss.frozen_models else 0.0
  )
  perf = M.throughput(
      B * L * args.steps, kd_s * args.steps, flops, mesh.devices.size, M.peak_flops_per_device()
  )
  report.update(
      flops_per_token=flops,
      tflops_per_device=perf["tflops_per_device"],
      mfu=perf.get("mfu"),
      **_of_ceiling(perf["tflops_per_device"]),
  )
  return report
