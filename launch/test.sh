#!/usr/bin/env bash
# Sets up the machine and runs every test: unit tests, tests that drive the
# tricks-worker binary, and the multi-process tests that run it under mpirun
# at np 2, 4 and 8 (all through `swift test`). Ends with "N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
swift build --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
swift test --skip-build 2>&1 | tee "$log" || status=$?
# XCTest's last summary line: "Executed N tests, with M failures (...)".
summary=$(grep -E "^[[:space:]]*Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -n 1 || true)
total=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
failed=$(echo "$summary" | sed -E 's/.*with ([0-9]+) failures?.*/\1/')
if [ -z "$summary" ] || [ "${total:-0}" -eq 0 ]; then
  echo "no tests ran" >&2
  exit 1
fi
echo
echo "$((total - failed)) passed, $failed failed"
exit "$status"
