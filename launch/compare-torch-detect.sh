#!/usr/bin/env bash
# The detector's training step, Tricks against PyTorch (CPU), interleaved in rounds on this machine
# (release build, one thread): `tricks-detect bench` vs `docs/torch_yolo.py --bench` (NCHW and
# channels_last) at the same shape: forward in training mode, a YOLOv3 loss on fixed synthetic
# boxes, backward, SGD with momentum, on random input after 3 warm-up steps. The PyTorch loss is
# a vectorised version of YOLOLoss's terms, not the same code (see docs/torch_yolo.py).
# PyTorch is held to the instruction set the kernels use (TRICKS_ISA, default the CPU's best):
# AVX2 → ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2, AVX-512 → AVX512_CORE / avx512.
# Overridable: ROUNDS (default 5), STEPS (20), SIDE (128), BATCH (8), WIDTH (16), CLASSES (10),
# SCRATCH (the build folder, default .build).
# PyTorch is a measuring stick, never a dependency: it comes from a venv,
#   python3 -m venv .venv-torch && .venv-torch/bin/pip install "torch==2.13.0+cpu" numpy safetensors pillow
# Prints a markdown table: per round the medians (and minima) in ms, and Tricks / best PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv-torch/bin/python
[ -x "$py" ] || { echo "compare-torch-detect: no $py; create it with: python3 -m venv .venv-torch && .venv-torch/bin/pip install \"torch==2.13.0+cpu\" numpy safetensors pillow" >&2; exit 1; }
rounds="${ROUNDS:-5}"; steps="${STEPS:-20}"; side="${SIDE:-128}"; batch="${BATCH:-8}"
width="${WIDTH:-16}"; classes="${CLASSES:-10}"; scratch="${SCRATCH:-.build}"
bash launch/setup.sh
swift build -c release --scratch-path "$scratch" --product tricks-detect >&2
bin="$scratch/release/tricks-detect"
export OPENBLAS_NUM_THREADS=1
shape=(--side "$side" --batch-size "$batch" --width "$width" --classes "$classes" --threads 1)
header=$($bin bench "${shape[@]}" --steps 1 --warmup 0 | head -n 1)
isa=$(echo "$header" | sed -n 's/.*, kernels \([a-z0-9]*\),.*/\1/p')
torch_env=()
case "$isa" in
  avx2) torch_env=(ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2) ;;
  avx512) torch_env=(ONEDNN_MAX_CPU_ISA=AVX512_CORE ATEN_CPU_CAPABILITY=avx512) ;;
esac
field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%Y-%m-%d); Tricks kernels $isa; PyTorch env: ${torch_env[*]:-default}"
echo "step: batch $batch, 3×$side×$side, width $width, $classes classes, one thread, $steps timed steps per run"
echo
echo "| round | Tricks median (min) ms | PyTorch NCHW | PyTorch channels_last | Tricks / best PyTorch, medians (minima) |"
echo "|---:|---:|---:|---:|---:|"
for r in $(seq 1 "$rounds"); do
  t=$($bin bench "${shape[@]}" --steps "$steps" | tail -n 1)
  a=$(env "${torch_env[@]}" "$py" docs/torch_yolo.py --bench "${shape[@]}" --steps "$steps")
  b=$(env "${torch_env[@]}" "$py" docs/torch_yolo.py --bench "${shape[@]}" --steps "$steps" --channels-last)
  tm=$(echo "$t" | field median_ms); tn=$(echo "$t" | field min_ms)
  am=$(echo "$a" | field median_ms); an=$(echo "$a" | field min_ms)
  bm=$(echo "$b" | field median_ms); bn=$(echo "$b" | field min_ms)
  awk -v r="$r" -v tm="$tm" -v tn="$tn" -v am="$am" -v an="$an" -v bm="$bm" -v bn="$bn" 'BEGIN {
    pm = am < bm ? am : bm; pn = an < bn ? an : bn
    printf "| %d | %.1f (%.1f) | %.1f (%.1f) | %.1f (%.1f) | %.2f (%.2f) |\n", r, tm, tn, am, an, bm, bn, tm / pm, tn / pn }'
done
