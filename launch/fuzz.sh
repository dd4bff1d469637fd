#!/usr/bin/env bash
# Coverage-guided fuzzing of the readers of untrusted files (safetensors, IDX, npz, JPEG/PNG, VOC
# XML annotations) with libFuzzer and AddressSanitizer. Builds tricks-fuzz with
# `-sanitize=fuzzer,address -DFUZZING` (in .build-fuzz), writes the seed corpora and dictionaries,
# runs each target for SECONDS_PER_TARGET (default 20) and prints a table: executions,
# executions/s, crashes (the crash file) and coverage. Exits 1 if any target crashed, ran out of
# memory or time, or failed to run.
#
#   bash launch/fuzz.sh [SECONDS_PER_TARGET]
#
# FUZZ_TARGETS="npz voc" runs some targets only. Corpora grow across runs in
# .build-fuzz/fuzz/corpus/TARGET; logs and crash files are in .build-fuzz/fuzz/. A crash file
# replays with `TRICKS_FUZZ_TARGET=TARGET .build-fuzz/debug/tricks-fuzz FILE`, or in a plain build
# with `tricks-fuzz TARGET FILE` (docs/reliability.md, "Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
[[ "$seconds" =~ ^[0-9]+$ ]] && ((seconds > 0)) || { echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2; }
targets=(${FUZZ_TARGETS:-safetensors idx npz image voc})
bash launch/setup.sh

# swiftc -sanitize=fuzzer links the toolchain's own libFuzzer (compiler-rt), not a distribution's.
swiftc="$(readlink -f "$(command -v swiftc)")"
rt="$("$(dirname "$swiftc")/clang" -print-resource-dir)/lib/linux/libclang_rt.fuzzer-$(uname -m).a"
if [ ! -f "$rt" ]; then
  echo "fuzz: $rt is missing: this Swift toolchain has no libFuzzer runtime (the swift.org Linux toolchains ship it)" >&2
  exit 2
fi

echo "== building tricks-fuzz (libFuzzer + AddressSanitizer, debug) in .build-fuzz"
t0=$(date +%s)
# ld.gold warns about every ASan symbol it cannot export; nothing to act on.
swift build -c debug --product tricks-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xcc -fsanitize=fuzzer-no-link,address \
  2>&1 | { grep -v "Cannot export local symbol" || true; }
echo "build: $(($(date +%s) - t0)) s"
bin=.build-fuzz/debug/tricks-fuzz
work=.build-fuzz/fuzz
rm -rf "$work/seeds" "$work/logs"
mkdir -p "$work/logs" "$work/crashes"
"$bin" --write-seeds "$work/seeds"
cp Tests/Fixtures/*.jpg "$work/seeds/image/"

# libFuzzer reports crashes itself; the Swift runtime's backtracer would only hold the process.
export SWIFT_BACKTRACE=enable=no
status=0
rows=()
for t in "${targets[@]}"; do
  [ -d "$work/seeds/$t" ] || { echo "fuzz: unknown target $t" >&2; exit 2; }
  mkdir -p "$work/corpus/$t"
  log="$work/logs/$t.log"
  echo "== $t: ${seconds} s"
  rc=0
  TRICKS_FUZZ_TARGET="$t" "$bin" "$work/corpus/$t" "$work/seeds/$t" -dict="$work/seeds/$t.dict" \
    -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work/crashes/$t-" >"$log" 2>&1 || rc=$?
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
  rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -n 1)
  cov=$(grep -oE "cov: [0-9]+" "$log" | tail -n 1 | cut -d' ' -f2)
  crash=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | tail -n 1)
  if [ -n "$crash" ] || [ "$rc" != 0 ]; then
    status=1
    [ -n "$crash" ] || crash="exit $rc, see $log"
    grep -m 1 -E "^==[0-9]+==ERROR|Fatal error|SUMMARY" "$log" >&2 || true
    echo "   (the whole report: $log)" >&2
  fi
  rows+=("$(printf '%-12s %12s %8s  %-8s %s' "$t" "${runs:-?}" "${rate:-?}" "${crash:-0}" "${cov:-?}")")
done

echo
printf '%-12s %12s %8s  %-8s %s\n' target executions exec/s crashes cov
printf '%s\n' "${rows[@]}"
if [ "$status" != 0 ]; then
  echo
  echo "replay a crash: TRICKS_FUZZ_TARGET=TARGET $bin FILE   (or, in a plain build: tricks-fuzz TARGET FILE)"
fi
exit "$status"
