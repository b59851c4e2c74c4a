"""The training loop: resume or init, step, log one step late, checkpoint, stop cleanly.

Resume order: the latest checkpoint in the workdir, else the configured init.
SIGTERM/SIGINT finish the current step, save, and return; with several processes the stop
is agreed through orbax's preemption sync point (JAX's coordination service owns SIGTERM).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
from typing import Iterator

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from distil_jax.sharding import make_mesh, use_mesh
from distil_jax.train import metrics as M
from distil_jax.train import positions
from distil_jax.train.checkpoint import Checkpointer
from distil_jax.train.config import TrainConfig
from distil_jax.train.objective import Loss
from distil_jax.train.optim import make_optimizer
from distil_jax.train.state import abstract_train_state, init_train_state
from distil_jax.train.step import TrainState, field_shardings, jit_train_step


@dataclasses.dataclass
class TrainResult:
  state: TrainState
  step: int
  preempted: bool
  last_metrics: dict[str, float]
  graphdef: object = None
  data_exhausted: bool = False  # the batches ran out before `cfg.steps`


class _StopFlag:
  """Set by SIGTERM/SIGINT; the loop checks it between steps."""

  def __init__(self):
    self.set = False

  @contextlib.contextmanager
  def installed(self, signals):
    previous = {s: signal.signal(s, self._handle) for s in signals}
    try:
      yield self
    finally:
      for s, h in previous.items():
        signal.signal(s, h)

  def _handle(self, signum, frame):
    del frame
    self.set = True


def _global_batch(local: dict[str, np.ndarray], shardings, fields) -> dict[str, jax.Array]:
  """This process's rows of the fields the loss declares -> one global array per key (the
  same call on 1 or N processes). Keys the loss does not read stay on the host."""
  out = {}
  for k, spec in fields.items():
    if k not in local:
      raise KeyError(
          f"the batch has no field {k!r}, which the loss reads "
          f"(the batch has: {', '.join(sorted(local))})"
      )
    v = np.asarray(local[k], dtype=spec.dtype)
    global_shape = (v.shape[0] * jax.process_count(), *v.shape[1:])
    out[k] = jax.make_array_from_process_local_data(shardings[k], v, global_shape)
  return out


def open_frozen(cfg: TrainConfig, loss: Loss, mesh) -> dict:
  """The frozen models the loss reads, opened onto the training mesh by the same rules:
  name -> nnx.Module."""
  missing = [n for n in loss.frozen_models if not (n in cfg.frozen and cfg.frozen[n].path)]
  if missing:
    raise ValueError(
        f"the {type(loss).__name__} reads frozen model(s) {missing}: set "
        + ", ".join(f"--config.frozen.{n}.path" for n in missing)
    )
  from distil_jax.loading import open_model

  out = {}
  for name in loss.frozen_models:
    spec = cfg.frozen[name]
    out[name] = open_model(
        spec.path,
        mesh=mesh,
        rules=cfg.rules,
        dtype=spec.dtype,
        attention_impl=cfg.model.attention_impl,
        remat_policy=cfg.model.remat_policy,
    )
  return out


def train(
    cfg: TrainConfig,
    workdir: str,
    batches: Iterator,
    *,
    loss: Loss | None = None,
    mesh=None,
    progress: bool = True,
) -> TrainResult:
  """Train to `cfg.steps` (or until a stop signal). `batches` yields this process's share of
  each global batch and has `get_state()` / `set_state()`; it is checkpointed with the state.
  The loss is `cfg.loss.build(cfg)` unless given; its frozen models are opened from
  `cfg.frozen`."""
  mesh = mesh if mesh is not None else make_mesh(cfg.mesh)
  loss = loss or cfg.loss.build(cfg)
  tx, schedule = make_optimizer(cfg.optim, cfg.steps)
  ckpt = Checkpointer(workdir, cfg.checkpoint)
  writer = M.MetricsWriter(workdir)
  multi = jax.process_count() > 1
  main_thread = threading.current_thread() is threading.main_thread()
  signals = (signal.SIGTERM, signal.SIGINT) if main_thread and not multi else ()
  try:
    with use_mesh(mesh, cfg.rules), _StopFlag().installed(signals) as stop:
      frozen_models = open_frozen(cfg, loss, mesh)
      frozen_cfgs = {n: m.cfg for n, m in frozen_models.items()}
      if hasattr(loss, "bind"):  # settle what depends on the models' shapes
        loss = loss.bind(cfg.model, frozen_cfgs)
      make_extra = None
      if hasattr(loss, "extra_module"):
        make_extra = loss.extra_module(cfg.model, frozen_cfgs, cfg.seed)
      graphdef, extra_graphdef, abstract_state = abstract_train_state(cfg, mesh, tx, make_extra)
      state, latest = ckpt.restore_latest(abstract_state, batches)  # past unreadable steps
      if state is None:
        state = init_train_state(cfg, mesh, tx, abstract_state, make_extra)
      writer.rewind(latest or 0)
      frozen_graphdefs, frozen = {}, {}
      for name, model in frozen_models.items():
        frozen_graphdefs[name], frozen[name] = nnx.split(model)
      step_fn = jit_train_step(
          graphdef=graphdef,
          extra_graphdef=extra_graphdef,
          frozen_graphdefs=frozen_graphdefs,
          frozen_sharding=jax.tree.map(lambda a: a.sharding, frozen),
          loss=loss,
          tx=tx,
          schedule=schedule,
          grad_accum=cfg.grad_accum,
          state_sharding=jax.tree.map(lambda a: a.sharding, abstract_state),
          mesh=mesh,
          rules=cfg.rules,
      )
      result = _run(
          cfg, state, step_fn, batches, ckpt, writer, stop, mesh, multi, progress, loss, frozen
      )
      result.graphdef = graphdef
      return result
  finally:
    ckpt.wait()
    ckpt.close()
    writer.close()


def _run(cfg, state, step_fn, batches, ckpt, writer, stop, mesh, multi, progress, loss, frozen):
  from tqdm import tqdm

  step = int(jax.device_get(state.step))
  first_step = step
  key = jax.device_put(jax.random.key(cfg.seed), NamedSharding(mesh, PartitionSpec()))
  fields = loss.fields()
  in_shardings = field_shardings(fields, mesh, cfg.rules)
  # A pair loss runs two rows (chosen, rejected) per example.
  tokens_per_step = cfg.data.batch_size * cfg.data.seq_len * getattr(loss, "rows_per_example", 1)
  flops_per_token = cfg.model.flops_per_token(cfg.data.seq_len)
  peak = M.peak_flops_per_device()
  timer = M.StepTimer()
  bar = tqdm(
      total=cfg.steps,
      initial=step,
      disable=not progress or jax.process_index() != 0,
      dynamic_ncols=True,
  )
  last: dict[str, float] = {}

  def report(at_step, device_metrics):
    nonlocal last
    host = M.to_host(device_metrics)
    M.check_finite(at_step, host)
    seconds = timer.lap()
    if at_step > first_step + 1:  # the first step's time is mostly compilation
      host.update(M.throughput(tokens_per_step, seconds, flops_per_token, mesh.devices.size, peak))
    last = host
    if at_step % cfg.log_every == 0 or at_step == cfg.steps:
      writer.write(at_step, host)
    bar.update(at_step - bar.n)
    bar.set_postfix(
        loss=f"{host['loss']:.4f}", tok_s=f"{host.get('tokens_per_s', float('nan')):.0f}"
    )

  pending = None
  preempted = exhausted = False
  saved_step = first_step
  while step < cfg.steps:
    try:
      local = next(batches)
    except StopIteration:
      if multi:  # the others are already inside the next step's collectives: no clean stop
        raise RuntimeError(
            f"process {jax.process_index()}: the data ran out at step {step} of {cfg.steps} "
            "(data.num_epochs is finite); set num_epochs=0 or lower steps"
        ) from None
      logging.warning(
          "the data ran out at step %d of %d (data.num_epochs is finite); " "saving and stopping",
          step,
          cfg.steps,
      )
      exhausted = True
      break
    positions.check_rows(local, fields, cfg.loss_positions, step)
    batch = _global_batch(local, in_shardings, fields)
    with jax.transfer_guard("disallow"):
      state, device_metrics = step_fn(state, batch, key, frozen)
    step += 1
    if pending is not None:
      report(*pending)  # the previous step's metrics: ready by now, no stall
    pending = (step, device_metrics)
    preempted = stop.set or (multi and ckpt.reached_preemption(step))
    if step % cfg.checkpoint.every_steps == 0 or step == cfg.steps or preempted:
      report(*pending)  # never save a state whose loss or grad norm is not finite
      pending = None
      ckpt.save(step, state, batches)
      saved_step = step
    if preempted:
      break
  if pending is not None:
    report(*pending)
  if exhausted and step > saved_step:
    ckpt.save(step, state, batches)
  bar.close()
  return TrainResult(
      state=state, step=step, preempted=preempted, last_metrics=last, data_exhausted=exhausted
  )
