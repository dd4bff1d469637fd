#!/usr/bin/env bash
# Benchmarks (release build, one BLAS thread per rank): a resnet20 training step at
# batch 32 on 32×32×3 with a per-layer table and raw sgemm at the same shapes, the same
# step once per kernel instruction set the CPU runs (TRICKS_ISA), then data-parallel
# steps at np=1 and np=2 with synchronized and local batch norm.
# Prints markdown tables; docs/performance.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
swift build -c release --product tricks-worker >&2
bin=.build/release/tricks-worker
steps="${STEPS:-30}"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%Y-%m-%d)"
echo
$bin bench --batch-size 32 --threads 1 --steps "$steps"
header="| ranks | batch/rank | BN | median ms | min ms | wait ms | images/s |
|---:|---:|---|---:|---:|---:|---:|"
echo
echo "The same step on each kernel instruction set this CPU runs (TRICKS_ISA):"
echo
echo "| kernels | ranks | batch/rank | BN | median ms | min ms | wait ms | images/s |"
echo "|---|---:|---:|---|---:|---:|---:|---:|"
for isa in portable avx2 avx512; do
  TRICKS_ISA=$isa $bin --help >/dev/null 2>&1 || continue   # refused (exit 2): the CPU lacks it
  echo "| $isa $(TRICKS_ISA=$isa $bin bench --batch-size 32 --threads 1 --steps "$steps" --row | tail -n 1)"
done
echo
echo "The same step with every convolution on im2col + GEMM (no direct kernels):"
echo; echo "$header"
$bin bench --batch-size 32 --threads 1 --steps "$steps" --im2col --row
echo
echo "The same step with Winograd off (every stride-1 3×3 layer on the direct kernels):"
echo; echo "$header"
$bin bench --batch-size 32 --threads 1 --steps "$steps" --winograd-min-channels 1000000 --winograd-weight-grad-min-channels 1000000 --winograd4-min-channels 1000000 --row
echo
$bin bench --conv-kernels
echo
echo "The same step with two BLAS threads (the direct kernels split the images over both):"
echo; echo "$header"
$bin bench --batch-size 32 --threads 2 --steps "$steps" --row
echo
flags=(--oversubscribe -x OPENBLAS_NUM_THREADS=1 --bind-to none)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
echo "Data-parallel step, global batch 32 (median and min over ranks' mean per step; wait = gradient all-reduce not hidden by backward):"
echo; echo "$header"
for np in 1 2; do
  for bn in sync local; do
    [ "$np" = 1 ] && [ "$bn" = local ] && continue
    mpirun "${flags[@]}" -np "$np" $bin bench --batch-size 32 --threads 1 --steps "$steps" --bn "$bn" --row
  done
done
