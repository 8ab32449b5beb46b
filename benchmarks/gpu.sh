#!/usr/bin/env bash
# The GPU checks of medfew, for a session lent a CUDA machine: about 3-5 minutes on one GPU (< 8).
#
#     bash benchmarks/gpu.sh [PYTHON]        # PYTHON defaults to .venv/bin/python, else python3
#
# 1. the CUDA-only tests (pytest -m gpu): device-built and pinned episodes, no host sync inside a
#    training step (torch.cuda.set_sync_debug_mode("error")), vmap == loop on CUDA, a bf16 fit;
# 2. meta-training speed on the GPU: every method, vmap vs per-task loop, then channels-last;
# 3. one data-parallel run through torchrun on the GPU(s) present (NCCL), if the data root exists.
# Copy what it prints into docs/benchmarks.md ("GPU" section).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "benchmarks/gpu.sh needs a CUDA device"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"{torch.cuda.device_count()} device(s)")
PY

echo "== 1. CUDA tests"
timeout 240 "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider

echo "== 2. training speed (Conv4 28x28x3, 5-way 5-shot 15-query, meta-batch 4)"
timeout 150 "$PY" benchmarks/train_speed.py --device cuda --steps 10 --inner-steps 5 \
  --methods maml fomaml metasgd reptile protonet matchingnet
echo "-- 1 inner step"
timeout 60 "$PY" benchmarks/train_speed.py --device cuda --steps 10 --inner-steps 1 --methods maml fomaml metasgd
echo "-- channels-last"
timeout 60 "$PY" benchmarks/train_speed.py --device cuda --steps 10 --inner-steps 5 --channels-last \
  --methods maml protonet

ROOT="${MEDFEW_DATA_ROOT:-../shared/data}"
if [[ -d "$ROOT/medmnist" ]]; then
  echo "== 3. torchrun data-parallel smoke run on $(nvidia-smi -L 2>/dev/null | wc -l) GPU(s)"
  OUT="$(mktemp -d)"
  cat > "$OUT/gpu_smoke.yaml" <<'YAML'
data: {train: [pneumoniamnist], val: [breastmnist], test: [breastmnist], channels: 1, augment: standard}
episode: {ways: 2, shots: 5, queries: 15}
method: {name: maml, inner_steps: 5}
train: {steps: 20, meta_batch: 4, eval_every: 10, eval_episodes: 20, checkpoint_every: 10, log_every: 5, device: cuda}
YAML
  NGPU="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
  timeout 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" -m medfew train \
    --config "$OUT/gpu_smoke.yaml" --out "$OUT/run" --data-root "$ROOT" --quiet
  tail -n 3 "$OUT/run/metrics.jsonl"
else
  echo "== 3. skipped: no data root at $ROOT (set MEDFEW_DATA_ROOT)"
fi
echo "== done"
