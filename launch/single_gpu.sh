#!/usr/bin/env bash
# One GPU, for debugging and small students: cuDNN attention, no multi-process set-up.
#
#   launch/single_gpu.sh configs/sft/qwen2p5_0p5b.py /tmp/run --config.data.path=/tmp/sft-shards
#   launch/single_gpu.sh bench configs/sft/qwen2p5_1p5b.py      # throughput benchmark
#   launch/single_gpu.sh bench configs/sft/qwen2p5_0p5b.py --hf  # side by side with transformers
#
# With --hf, transformers' step (same shape, same FLOPs count) runs first in a child process that
# exits before JAX reserves its memory fraction below; add --hf_compile for torch.compile (the
# strongest PyTorch figure in ANCHORS.md) or --hf_grad_ckpt for gradient checkpointing.
set -euo pipefail
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true ${XLA_FLAGS:-}"
if [ "${1:-}" = "bench" ]; then
  shift
  exec .venv/bin/distil-jax bench --config "$1" --config.model.attention_impl=cudnn "${@:2}"
fi
CONFIG=${1:?config file}; WORKDIR=${2:?workdir}; shift 2
exec .venv/bin/distil-jax train --config "$CONFIG" --workdir "$WORKDIR" \
  --config.model.attention_impl=cudnn "$@"
