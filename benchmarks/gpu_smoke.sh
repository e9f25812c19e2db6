#!/usr/bin/env bash
# GPU smoke run (what only a GPU shows): bf16-mixed training, DDP and FSDP strategies, throughput fp32 vs bf16.
# Usage on a GPU machine with torch/transformers/peft/lightning installed: bash benchmarks/gpu_smoke.sh [out dir]
# Packages missing there can come as wheels in .whl/ (installed offline first).
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu_smoke}}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --find-links .whl hydra-core omegaconf nltk vaderSentiment 2>&1 | tail -2
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
export WANDB_MODE=offline HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
TINY="model=tiny data=demo data.max_records=200 logger=csv report.max_new_tokens=16 output_root=$OUT/runs"
run() {  # name, overrides...
  local name=$1; shift
  local start=$SECONDS
  python3 -m steerable.cli.train $TINY "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc=$? seconds=$((SECONDS - start))" | tee -a "$OUT/summary.txt"
  grep -E "held-out loss (before|after)" "$(ls -td "$OUT"/runs/*/*/ | head -1)/report.md" | tee -a "$OUT/summary.txt"
}
run gpu_bf16 hardware=gpu trainer.max_steps=40 method.lr=5e-3
run ddp_1gpu hardware=ddp hardware.devices=1 trainer.max_steps=10
run fsdp_1gpu hardware=fsdp hardware.devices=1 trainer.max_steps=10 method.stages=[train]
python3 benchmarks/precision_throughput.py | tee "$OUT/throughput.txt"
