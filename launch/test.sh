#!/usr/bin/env bash
# Sets up the machine and runs every test: unit tests, tests that drive the
# tricks-worker binary, and the multi-process tests that run it under mpirun
# at np 2, 4 and 8 (all through `swift test`); then the kernel tests again with
# each instruction set this CPU runs forced through TRICKS_ISA (portable C,
# avx2, avx512). Ends with "N passed, M failed" over all runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
swift build --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
passed=0; failed=0
# XCTest's last summary line: "Executed N tests, with M failures (...)".
tally() {
  local summary total fails
  summary=$(grep -E "^[[:space:]]*Executed [0-9]+ tests?, with [0-9]+ failures?" "$log" | tail -n 1 || true)
  total=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
  fails=$(echo "$summary" | sed -E 's/.*with ([0-9]+) failures?.*/\1/')
  if [ -z "$summary" ] || [ "${total:-0}" -eq 0 ]; then
    echo "no tests ran ($1)" >&2
    exit 1
  fi
  passed=$((passed + total - fails)); failed=$((failed + fails))
}
swift test --skip-build 2>&1 | tee "$log" || status=$?
tally "full suite"
# The kernel tests (layers against finite differences and float64, every kernel path the CPU
# runs) once more under each forced instruction set, unless one is forced already.
# The binary refuses (exit 2) a set the CPU lacks before doing anything else.
bin="$(swift build --show-bin-path)/tricks-worker"
if [ -z "${TRICKS_ISA:-}" ]; then
  for isa in portable avx2 avx512; do
    TRICKS_ISA=$isa "$bin" --help >/dev/null 2>&1 || continue
    echo "== kernel tests with TRICKS_ISA=$isa"
    TRICKS_ISA=$isa swift test --skip-build --filter 'LayerGradientTests|NumericsTests|KernelISATests' 2>&1 | tee "$log" || status=$?
    tally "TRICKS_ISA=$isa"
  done
fi
echo
echo "$passed passed, $failed failed"
exit "$status"
