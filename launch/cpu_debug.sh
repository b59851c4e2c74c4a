#!/usr/bin/env bash
# A laptop CPU pretending to be 8 devices: the sharded code paths (FSDP, tensor parallel)
# run exactly as on a pod, only slower.
#
#   launch/cpu_debug.sh configs/sft/tiny.py /tmp/tiny --config.data.path=/tmp/sft-shards --config.mesh.fsdp=4
set -euo pipefail
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES:-8} ${XLA_FLAGS:-}"
export JAX_PLATFORMS=cpu
CONFIG=${1:?config file}; WORKDIR=${2:?workdir}; shift 2
exec .venv/bin/distil-jax train --config "$CONFIG" --workdir "$WORKDIR" "$@"
