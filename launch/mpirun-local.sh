#!/usr/bin/env bash
# Runs N tricks-worker ranks on this machine:
#   launch/mpirun-local.sh N [tricks-worker train flags...]
# Adds the Open MPI flags a root or oversubscribed run needs and gives each rank
# cores/N BLAS threads (at least 1), so ranks × threads ≤ cores.
set -euo pipefail
cd "$(dirname "$0")/.."
np="${1:?usage: launch/mpirun-local.sh N [train flags...]}"; shift
bash launch/setup.sh
swift build -c release --product tricks-worker >&2
cores=$(nproc)
threads=$(( cores / np )); (( threads >= 1 )) || threads=1
flags=(-np "$np" -x "OPENBLAS_NUM_THREADS=$threads" --bind-to none)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
(( np > cores )) && flags+=(--oversubscribe)
exec mpirun "${flags[@]}" .build/release/tricks-worker train "$@"
