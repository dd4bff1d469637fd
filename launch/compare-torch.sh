#!/usr/bin/env bash
# Tricks against PyTorch (CPU), interleaved in rounds on this machine (release build, one
# thread): the resnet20 training step at batch 32 (tricks-worker bench vs
# docs/torch_bench_step.py, NCHW and channels_last). PyTorch is held to the instruction set the
# kernels use (TRICKS_ISA, default the CPU's best): AVX2 → ONEDNN_MAX_CPU_ISA=AVX2
# ATEN_CPU_CAPABILITY=avx2. ROUNDS (default 5) and STEPS (default 30) can be overridden.
# PyTorch is a measuring stick, never a dependency: it comes from a venv,
#   python3 -m venv .venv-torch && .venv-torch/bin/pip install "torch==2.13.0+cpu" numpy safetensors
# Prints a markdown table: per round the medians (and minima) in ms, and Tricks / best PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv-torch/bin/python
[ -x "$py" ] || { echo "compare-torch: no $py; create it with: python3 -m venv .venv-torch && .venv-torch/bin/pip install \"torch==2.13.0+cpu\" numpy safetensors" >&2; exit 1; }
bash launch/setup.sh
swift build -c release --product tricks-worker >&2
bin=.build/release/tricks-worker
rounds="${ROUNDS:-5}"; steps="${STEPS:-30}"
isa=$($bin bench --batch-size 8 --steps 1 --threads 1 | sed -n 's/.*, kernels \([a-z0-9]*\),.*/\1/p' | head -n 1)
torch_env=()
case "$isa" in
  avx2) torch_env=(ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2) ;;
  avx512) torch_env=(ONEDNN_MAX_CPU_ISA=AVX512_CORE ATEN_CPU_CAPABILITY=avx512) ;;
esac
export OPENBLAS_NUM_THREADS=1
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%Y-%m-%d); Tricks kernels $isa; PyTorch env: ${torch_env[*]:-default}"
echo
echo "| round | Tricks median (min) ms | PyTorch NCHW | PyTorch channels_last | Tricks / best PyTorch, medians (minima) |"
echo "|---:|---:|---:|---:|---:|"
field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p"; }
for r in $(seq 1 "$rounds"); do
  row=$($bin bench --batch-size 32 --threads 1 --steps "$steps" --row | tail -n 1)
  tm=$(echo "$row" | awk -F'|' '{gsub(/ /,"",$5); print $5}'); tn=$(echo "$row" | awk -F'|' '{gsub(/ /,"",$6); print $6}')
  a=$(env "${torch_env[@]}" "$py" docs/torch_bench_step.py --steps "$steps")
  b=$(env "${torch_env[@]}" "$py" docs/torch_bench_step.py --steps "$steps" --channels-last)
  am=$(echo "$a" | field median_ms); an=$(echo "$a" | field min_ms)
  bm=$(echo "$b" | field median_ms); bn=$(echo "$b" | field min_ms)
  awk -v r="$r" -v tm="$tm" -v tn="$tn" -v am="$am" -v an="$an" -v bm="$bm" -v bn="$bn" 'BEGIN {
    pm = am < bm ? am : bm; pn = an < bn ? an : bn
    printf "| %d | %.1f (%.1f) | %.1f (%.1f) | %.1f (%.1f) | %.2f (%.2f) |\n", r, tm, tn, am, an, bm, bn, tm / pm, tn / pn }'
done
