#!/usr/bin/env bash
# Sets up the machine, builds tricks-worker (release) and trains resnet20 on Fashion-MNIST.
# Extra arguments go to `tricks-worker train`, e.g. `launch/train.sh --epochs 1 --out runs/r1`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
swift build -c release --product tricks-worker
exec .build/release/tricks-worker train "$@"
