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
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%Y-%m-%d); TRICKS_ISA=${TRICKS_ISA:-unset}"
echo
# One configuration: interleaved rounds of default and deterministic steps; per run the median
# and the fastest step (the steadier figure on a shared machine).
compare() {   # label, np, bench flags...
  local label=$1 np=$2; shift 2
  local def="" det="" r a b
  echo "$label, np=$np, $rounds interleaved rounds of $steps steps (ms, median / fastest step of each run):"
  echo
  echo "| round | default | deterministic |"
  echo "|---:|---:|---:|"
  for r in $(seq 1 "$rounds"); do
    a=$(mpirun "${flags[@]}" -np "$np" $bin bench "$@" --threads 1 --steps "$steps" --row | tail -n 1 | awk -F'|' '{gsub(/ /,""); print $5 "/" $6}')
    b=$(mpirun "${flags[@]}" -np "$np" $bin bench "$@" --threads 1 --steps "$steps" --row --deterministic | tail -n 1 | awk -F'|' '{gsub(/ /,""); print $5 "/" $6}')
    def+="$a"$'\n'; det+="$b"$'\n'
    echo "| $r | $a | $b |"
  done
  median() { printf '%s' "$1" | cut -d/ -f"$2" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
  local dm=$(median "$def" 1) tm=$(median "$det" 1) df=$(median "$def" 2) tf=$(median "$det" 2)
  echo
  echo "ratio deterministic / default: medians $tm / $dm = $(awk -v a="$dm" -v b="$tm" 'BEGIN{printf "%.3f", b/a}'), fastest steps $tf / $df = $(awk -v a="$df" -v b="$tf" 'BEGIN{printf "%.3f", b/a}')"
  echo
}
compare "resnet20, global batch 32, 3×32×32 (4-image micro-shards)" 1 --batch-size 32
compare "resnet20, global batch 32, 3×32×32 (4-image micro-shards)" 2 --batch-size 32
[ "${ONLY_TARGET:-0}" = 1 ] && exit 0   # ONLY_TARGET=1: the two configurations of the cost target
compare "resnet20, global batch 32, 3×32×32, --micro-shards 4 (8-image micro-shards)" 1 --batch-size 32 --micro-shards 4
compare "resnet20, global batch 32, 3×32×32, --micro-shards 1 (one 32-image shard: the rank of an N-rank job with S = N)" 1 --batch-size 32 --micro-shards 1
compare "resnet20, global batch 64, 1×28×28 (the main job's shape; 8-image micro-shards)" 1 --batch-size 64 --channels 1 --size 28
echo "Detector step at one image per rank (128 px, width 16, one thread):"
echo
for mode in "" --deterministic; do
  .build/release/tricks-detect bench --batch-size 1 --steps "$steps" $mode | tail -n 1
done
echo
[ "${COMM:-1}" = 0 ] && exit 0   # COMM=0: the steps only
for transport in shm tcp; do
  extra=(); [ "$transport" = tcp ] && extra=(--mca btl tcp,self)
  for np in 2 4 8; do
    echo "Collectives over $transport, np=$np:"
    echo
    mpirun "${flags[@]}" "${extra[@]}" -np "$np" $bin bench --comm | tail -n +3
    echo
  done
done
