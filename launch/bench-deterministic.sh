#!/usr/bin/env bash
# The deterministic mode's cost, and the inputs of docs/scaling.md (release build; run it on a
# quiet machine):
#  1. the resnet20 step at global batch 32, one thread per rank, default mode and
#     --deterministic, at np=1 and np=2, in ROUNDS interleaved rounds (default 5);
#  2. the detector's step at one image per rank (tricks-detect bench --batch-size 1), both modes;
#  3. all-reduce and the fixed-order tree by message size at np 2, 4 and 8, over shared memory
#     and over TCP (tricks-worker bench --comm; fit with python3 docs/scaling_model.py --fit).
# Prints markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh >&2
swift build -c release --product tricks-worker >&2
swift build -c release --product tricks-detect >&2
bin=.build/release/tricks-worker
rounds="${ROUNDS:-5}"; steps="${STEPS:-20}"
flags=(--oversubscribe -x OPENBLAS_NUM_THREADS=1 --bind-to none)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%Y-%m-%d); TRICKS_ISA=${TRICKS_ISA:-the CPU's best}"
echo
echo "resnet20 step, global batch 32, one thread per rank, $rounds interleaved rounds of $steps steps (median ms of each):"
echo
echo "| round | np | default ms | deterministic ms | ratio |"
echo "|---:|---:|---:|---:|---:|"
declare -A all
for r in $(seq 1 "$rounds"); do
  for np in 1 2; do
    run() { mpirun "${flags[@]}" -np "$np" $bin bench --batch-size 32 --threads 1 --steps "$steps" --row "$@" | tail -n 1 | awk -F'|' '{gsub(/ /,"",$5); print $5}'; }
    a=$(run); b=$(run --deterministic)
    all[$np]+="$a $b "
    echo "| $r | $np | $a | $b | $(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.3f", b/a}') |"
  done
done
echo
for np in 1 2; do
  echo "np=$np: median of the rounds: $(echo ${all[$np]} | awk '{n=0; for(i=1;i<=NF;i+=2){d[n]=$i; t[n]=$(i+1); n++} asort(d); asort(t); m=int((n+1)/2); printf "default %.2f ms, deterministic %.2f ms, ratio %.3f", d[m], t[m], t[m]/d[m]}')"
done
echo
echo "Detector step at one image per rank (128 px, width 16, one thread):"
echo
for mode in "" --deterministic; do
  .build/release/tricks-detect bench --batch-size 1 --steps "$steps" $mode | tail -n 1
done
echo
for transport in shm tcp; do
  extra=(); [ "$transport" = tcp ] && extra=(--mca btl tcp,self)
  for np in 2 4 8; do
    echo "Collectives over $transport, np=$np:"
    echo
    mpirun "${flags[@]}" "${extra[@]}" -np "$np" $bin bench --comm | tail -n +3
    echo
  done
done
