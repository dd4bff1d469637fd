#!/usr/bin/env bash
# Sets up the machine and runs every test: the unit and single-process tests
# (swift test, which also drives the tricks-worker binary).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
swift build --build-tests
swift test --skip-build
