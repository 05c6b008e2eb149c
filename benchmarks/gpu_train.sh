#!/usr/bin/env bash
# The one command for a lent GPU machine (the device tool runs it in a copy of this
# repository, with gpu_data/ from `benchmarks/gpu_train.py pack` carried along):
#   1. the trainer's CUDA tests (tests/test_cuda.py) and the device/resume/worker tests;
#   2. the four feed-forward models trained side by side for SLOT seconds;
#   3. the runs (best weights, logs, manifests; no resume checkpoints) packed under $OUT
#      in 15 MB parts, since at most 16 MB per file comes back.
# Usage: bash benchmarks/gpu_train.sh [SLOT_SECONDS] [MODELS]   (SLOT 0: the tests alone)
set -u
OUT=${OUT:-/tmp/gpu_out}
SLOT=${1:-320}
MODELS=${2:-attention-unet,unext,transunet,duck-net}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run on this machine
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# cuBLAS needs this for deterministic results (the exact-resume test).
export CUBLAS_WORKSPACE_CONFIG=:4096:8
mkdir -p "$OUT"
{
  date -u
  nvidia-smi
  $PY -c "import torch, cv2, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'cv2', cv2.__version__, 'numpy', numpy.__version__)"
  timeout 150 $PY -m pytest -q -p no:cacheprovider -rA tests/test_cuda.py tests/test_training.py -k "cuda or gpu or device or resumes or workers or time_limit"
} > "$OUT/env_and_tests.log" 2>&1
echo "tests done $(date -u +%T)" >> "$OUT/env_and_tests.log"
[ "$SLOT" = 0 ] && exit 0  # the tests alone
$PY benchmarks/gpu_train.py train --pack gpu_data --models "$MODELS" --runs gpu_runs --seconds "$SLOT" --device "$DEVICE" > "$OUT/train.log" 2>&1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >> "$OUT/train.log" 2>&1
tar cf - --exclude='checkpoints/last*' --exclude='*-probe/checkpoints' gpu_runs | split -b 15M - "$OUT/runs.tar.part-"
ls -l "$OUT"
