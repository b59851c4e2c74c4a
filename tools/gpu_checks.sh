#!/usr/bin/env bash
# The GPU checklist, in parts that each fit a 10-minute command on one H100/H200. On a machine
# with no package index, run tools/device_wheels.sh first (elsewhere) and bring .whl/ along.
#
#   tools/gpu_checks.sh env          # devices, versions, the cuDNN attention tests on the GPU
#   tools/gpu_checks.sh sft-0p5b     # issue #3 target: 0.5B, batch 8 x 2048, side by side with HF
#   tools/gpu_checks.sh sft-0p5b-bf16  # the same with bf16 parameters on both sides
#   tools/gpu_checks.sh sft-1p5b     # 1.5B batch 4, side by side with HF
#   tools/gpu_checks.sh sft-1p5b-b8  # 1.5B batch 8 (must fit), unpacked and packed
#   tools/gpu_checks.sh attention-0p5b  # packed rows: dense-mask vs ragged cuDNN layout
#   tools/gpu_checks.sh tune-0p5b-remat  # remat policy sweep for 0.5B
#   tools/gpu_checks.sh tune-0p5b-loss   # loss chunk and logits dtype sweep for 0.5B
#   PYTHON=.venv/bin/python ATTN=xla tools/gpu_checks.sh smoke   # this script, on a CPU
#
# Every report is a JSON file in $OUT (default /tmp/gpu-checks); stdout shows them too.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-checks}; mkdir -p "$OUT"
if [ -d .whl ] && ! ${PYTHON:-python3} -c "import grain, ml_collections" 2>/dev/null; then
  ${PYTHON:-python3} -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true ${XLA_FLAGS:-}"
DJ="${PYTHON:-python3} -m distil_jax.cli"
ATTN=${ATTN:-cudnn}

bench() {  # NAME CONFIG ARGS...: one bench report, kept even when it fails
  local name=$1 config=$2; shift 2
  echo "== $name: bench --config $config $*"
  $DJ bench --config "$config" --config.model.attention_impl="$ATTN" "$@" >"$OUT/$name.json" \
    2>"$OUT/$name.err"
  echo "rc=$?"; cat "$OUT/$name.json"; tail -n 5 "$OUT/$name.err"
}

case "${1:?part: env | sft-0p5b | sft-0p5b-bf16 | attention-0p5b | sft-1p5b | sft-1p5b-b8 | tune-0p5b-remat | tune-0p5b-loss | smoke}" in
  env)
    nvidia-smi -L
    ${PYTHON:-python3} -c "import jax, jaxlib, flax, optax, orbax.checkpoint as o, transformers, torch
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
      'transformers', transformers.__version__, 'torch', torch.__version__)
print(jax.devices())
from jax._src.cudnn.fused_attention_stablehlo import check_cudnn_version
print('cudnn', check_cudnn_version())"
    JAX_PLATFORMS=cuda ${PYTHON:-python3} -m pytest -q -p no:cacheprovider tests/model/test_cudnn_gpu.py \
      2>&1 | tee "$OUT/cudnn_tests.txt"
    ;;
  sft-0p5b)  # one document a row on both sides (transformers has no packing): like for like
    bench sft_0p5b_b8 configs/sft/qwen2p5_0p5b.py --unpacked --hf --hf_compile  # fp32 master
    ;;
  sft-0p5b-bf16)  # bf16 parameters on both sides (ANCHORS' 33% eager / 47% compiled rows)
    bench sft_0p5b_b8_bf16 configs/sft/qwen2p5_0p5b.py --unpacked \
      --config.model.param_dtype=bfloat16 --hf --hf_compile
    ;;
  attention-0p5b)  # packed documents: dense bias (default) vs cuDNN's ragged layout
    bench attn_0p5b_dense configs/sft/qwen2p5_0p5b.py
    bench attn_0p5b_ragged16 configs/sft/qwen2p5_0p5b.py --config.model.max_segments_per_row=16
    ;;
  sft-1p5b)
    bench sft_1p5b_b4 configs/sft/qwen2p5_1p5b.py --config.data.batch_size=4 --unpacked \
      --hf --hf_compile
    ;;
  sft-1p5b-b8)  # must fit (transformers runs out of memory at batch 8)
    bench sft_1p5b_b8 configs/sft/qwen2p5_1p5b.py --config.data.batch_size=8 --unpacked
    bench sft_1p5b_b8_packed configs/sft/qwen2p5_1p5b.py --config.data.batch_size=8
    ;;
  smoke)  # the script's own plumbing on a CPU: PYTHON=.venv/bin/python ATTN=xla ... smoke
    bench smoke_tiny configs/sft/tiny.py --config.data.batch_size=2 --config.data.seq_len=64 \
      --steps 1 --warmup 1 --unpacked --hf
    ;;
  tune-0p5b-remat)
    for remat in none dots_no_batch dots full; do
      bench "tune_0p5b_${remat}" configs/sft/qwen2p5_0p5b.py --config.model.remat_policy=$remat
    done
    ;;
  tune-0p5b-loss)
    for chunk in 256 1024; do
      bench "tune_0p5b_chunk$chunk" configs/sft/qwen2p5_0p5b.py --config.loss_chunk=$chunk
    done
    bench tune_0p5b_bf16_logits configs/sft/qwen2p5_0p5b.py --config.loss_logits_dtype=bfloat16
    ;;
  *) echo "unknown part $1" >&2; exit 2 ;;
esac
