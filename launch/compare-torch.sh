#!/usr/bin/env bash
# Tricks against PyTorch (CPU), interleaved in rounds on this machine (release build):
#   MODE=step (default): the resnet20 training step at batch 32, one thread (tricks-worker bench
#     vs docs/torch_bench_step.py, NCHW and channels_last);
#   MODE=train: the README's main job, `bash launch/train.sh --epochs 1` with its defaults (one
#     rank per core under mpirun, setup and build checks included) vs docs/torch_fashion_mnist.py
#     (channels_last, one process, a thread per core), whole-process wall time and test accuracy
#     (ROUNDS default 2; a round takes about 4 minutes here). TRICKS_RANKS=1 times one process
#     with a thread per core instead.
# PyTorch is held to the instruction set the
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
mode="${MODE:-step}"
rounds="${ROUNDS:-$([ "$mode" = train ] && echo 2 || echo 5)}"; steps="${STEPS:-30}"
isa=$($bin bench --batch-size 8 --steps 1 --threads 1 | sed -n 's/.*, kernels \([a-z0-9]*\),.*/\1/p' | head -n 1)
torch_env=()
case "$isa" in
  avx2) torch_env=(ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2) ;;
  avx512) torch_env=(ONEDNN_MAX_CPU_ISA=AVX512_CORE ATEN_CPU_CAPABILITY=avx512) ;;
esac
field() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
if [ "$mode" = train ]; then
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%Y-%m-%d); Tricks kernels $isa, ranks ${TRICKS_RANKS:-one per core (at most 8)}; PyTorch env: ${torch_env[*]:-default}"
  echo
  echo "| round | Tricks wall s (accuracy) | PyTorch wall s (accuracy) | Tricks / PyTorch |"
  echo "|---:|---:|---:|---:|"
  for r in $(seq 1 "$rounds"); do
    t0=$(date +%s.%N); out=$(bash launch/train.sh --epochs 1 --log-every 1000 | tail -n 1); t1=$(date +%s.%N)
    tacc=$(echo "$out" | sed -n 's/.*"test_accuracy":\([0-9.]*\).*/\1/p')
    p0=$(date +%s.%N); pout=$(env "${torch_env[@]}" "$py" docs/torch_fashion_mnist.py --epochs 1 --threads "$(nproc)" 2>/dev/null | tail -n 1); p1=$(date +%s.%N)
    pacc=$(echo "$pout" | field test_accuracy)
    awk -v r="$r" -v t0="$t0" -v t1="$t1" -v p0="$p0" -v p1="$p1" -v ta="$tacc" -v pa="$pacc" 'BEGIN {
      printf "| %d | %.1f (%.4f) | %.1f (%.4f) | %.2f |\n", r, t1 - t0, ta, p1 - p0, pa, (t1 - t0) / (p1 - p0) }'
  done
  exit 0
fi
export OPENBLAS_NUM_THREADS=1
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%Y-%m-%d); Tricks kernels $isa; PyTorch env: ${torch_env[*]:-default}"
echo
echo "| round | Tricks median (min) ms | PyTorch NCHW | PyTorch channels_last | Tricks / best PyTorch, medians (minima) |"
echo "|---:|---:|---:|---:|---:|"
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
