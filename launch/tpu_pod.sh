#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: the same command runs on every host; JAX finds its peers
# from the TPU metadata (`--coordinator auto` calls jax.distributed.initialize()).
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a launch/tpu_pod.sh configs/sft/qwen2p5_1p5b.py gs://bucket/run1 \
#       --config.data.path=gs://bucket/sft-shards
#
# Before the first run, install the project on every host:
#   gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all \
#       --command 'git clone <your fork> distil-jax && cd distil-jax && make install && .venv/bin/pip install "jax[tpu]"'
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
CONFIG=${1:?config file}; WORKDIR=${2:?workdir}; shift 2
# Async collectives overlap FSDP all-gathers with compute on TPU.
FLAGS="--xla_tpu_enable_async_collective_fusion=true --xla_tpu_enable_async_collective_fusion_fuse_all_gather=true"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  cd distil-jax && LIBTPU_INIT_ARGS='$FLAGS' .venv/bin/distil-jax train \
    --config $CONFIG --workdir $WORKDIR --coordinator auto --no_progress $*"
