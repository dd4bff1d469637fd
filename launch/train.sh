#!/usr/bin/env bash
# Sets up the machine, builds tricks-worker (release) and trains resnet20 on Fashion-MNIST.
# Extra arguments go to `tricks-worker train`, e.g. `launch/train.sh --epochs 1 --out runs/r1`.
#
# On a machine of several cores it runs one rank per core under mpirun (launch/mpirun-local.sh;
# at most 8 ranks, a power of two, so the default global batch of 64 splits evenly), each with
# cores/ranks BLAS threads and SyncBatchNorm over the whole batch: the same training as one
# process, and faster than one process of several threads (docs/performance.md).
# TRICKS_RANKS=N sets the number of ranks (1: one process, no mpirun).
set -euo pipefail
cd "$(dirname "$0")/.."
cores=$(nproc)
ranks="${TRICKS_RANKS:-}"
if [ -z "$ranks" ]; then
  ranks=1
  while (( ranks * 2 <= cores && ranks * 2 <= 8 )); do ranks=$(( ranks * 2 )); done
fi
[[ "$ranks" =~ ^[1-9][0-9]*$ ]] || { echo "train.sh: TRICKS_RANKS must be a positive integer, got '$ranks'" >&2; exit 2; }
(( ranks > 1 )) && exec bash launch/mpirun-local.sh "$ranks" "$@"
bash launch/setup.sh
swift build -c release --product tricks-worker >&2
exec .build/release/tricks-worker train "$@"
