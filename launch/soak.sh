#!/usr/bin/env bash
# Soak: N ranks (default 8, oversubscribed) train resnet20 on a 1,024-image Fashion-MNIST subset
# for many steps (default 10,000) with --check-replicas, writing checkpoints, metrics and
# evaluations as they come. Every few seconds it samples each rank's resident memory
# (/proc/PID/status VmRSS) and open file descriptors (/proc/PID/fd), and mpirun's; at the end it
# prints per process the RSS after warm-up and at the end, the least-squares slope of RSS against
# the step (KiB per 1,000 steps) and against time (KiB per minute), and the descriptor counts.
#
#   bash launch/soak.sh [STEPS]
#
# Environment: SOAK_NP (8), SOAK_MODEL (resnet20), SOAK_BATCH (16, global), SOAK_SAMPLE_SECONDS (5),
# SOAK_WARMUP_STEPS (500: samples before it are left out of the slope), SOAK_CHECK_REPLICAS (10),
# SOAK_DIR (runs/soak). Samples go to $SOAK_DIR/samples.csv, the training output to
# $SOAK_DIR/train.log. Exits 1 if the job did not end with status 0, a replica check reported a
# divergence, a rank's RSS grew by more than SOAK_MAX_SLOPE_KIB (256) KiB per 1,000 steps after
# warm-up, or a rank's descriptor count ended higher than after warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-10000}"
np="${SOAK_NP:-8}"; model="${SOAK_MODEL:-resnet20}"; batch="${SOAK_BATCH:-16}"
every="${SOAK_SAMPLE_SECONDS:-5}"; warmup="${SOAK_WARMUP_STEPS:-500}"; check="${SOAK_CHECK_REPLICAS:-10}"
max_slope="${SOAK_MAX_SLOPE_KIB:-256}"
dir="${SOAK_DIR:-runs/soak}"

# A launcher started from inside an MPI process would join its job.
for v in $(compgen -e | grep -E '^(OMPI|PMIX)_' || true); do unset "$v"; done

bash launch/setup.sh
swift build -c release --product tricks-worker >&2
bin=.build/release/tricks-worker

rm -rf "$dir"; mkdir -p "$dir"
# The first 1,024 training and 256 test images of Fashion-MNIST, as IDX files.
python3 launch/fashion-subset.py "$dir/data" 1024 256

flags=(-np "$np" -x OPENBLAS_NUM_THREADS=1 --bind-to none)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
(( np > $(nproc) )) && flags+=(--oversubscribe)
# --epochs sets a schedule far longer than the run, so the learning rate stays near its base
# value; one epoch is 64 steps, so every 64 steps there is an evaluation and a checkpoint.
args=(train --data "$dir/data" --model "$model" --batch-size "$batch" --max-steps "$steps" --epochs 100000
      --check-replicas "$check" --checkpoint-every 500 --log-every 50 --out "$dir/out")
echo "soak: mpirun ${flags[*]} $bin ${args[*]}" | tee "$dir/command.txt"
echo "soak: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%M:%SZ)" | tee -a "$dir/command.txt"

start=$(date +%s.%N)
mpirun "${flags[@]}" "$bin" "${args[@]}" >"$dir/train.log" 2>&1 &
job=$!

csv="$dir/samples.csv"
echo "seconds,step,process,pid,rss_kib,fds" >"$csv"
declare -A rank_of
while kill -0 "$job" 2>/dev/null; do
  now=$(date +%s.%N)
  t=$(awk -v a="$now" -v b="$start" 'BEGIN { printf "%.1f", a - b }')
  step=$(grep -o '^step [0-9]*' "$dir/train.log" 2>/dev/null | tail -1 | cut -d' ' -f2 || true)
  for p in "$job" $(pgrep -P "$job" 2>/dev/null || true); do
    if [ -z "${rank_of[$p]:-}" ]; then
      if [ "$p" = "$job" ]; then rank_of[$p]=mpirun
      else
        r=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p' || true)
        [ -n "$r" ] || continue
        rank_of[$p]="rank$r"
      fi
    fi
    rss=""
    while read -r k v _; do [ "$k" = "VmRSS:" ] && rss=$v; done <"/proc/$p/status" 2>/dev/null || true
    fds=(/proc/"$p"/fd/*)
    [ -n "$rss" ] && [ -e "${fds[0]}" ] && echo "$t,${step:-0},${rank_of[$p]},$p,$rss,${#fds[@]}" >>"$csv"
  done
  sleep "$every"
done
status=0; wait "$job" || status=$?
end=$(date +%s.%N)
seconds=$(awk -v a="$end" -v b="$start" 'BEGIN { printf "%.0f", a - b }')

tail -3 "$dir/train.log"
diverged=$(grep -c "diverged" "$dir/train.log" || true)
python3 - "$csv" "$warmup" "$steps" "$seconds" "$status" "$diverged" "$max_slope" <<'EOF'
import csv, sys
path, warmup, steps, seconds, status, diverged, max_slope = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
rows = list(csv.DictReader(open(path)))
by = {}
for r in rows:
    by.setdefault(r["process"], []).append((float(r["seconds"]), int(r["step"]), int(r["rss_kib"]), int(r["fds"])))
def slope(xs, ys):
    n = len(xs)
    if n < 2: return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")
order = sorted(by, key=lambda k: (k == "mpirun", int(k[4:]) if k.startswith("rank") else 0))
print(f"\n{steps} steps in {seconds:.0f} s ({seconds / 60:.1f} min); {len(rows)} samples; exit status {status}; "
      f"divergence messages {diverged}; slope over samples at step >= {warmup}\n")
print(f"| process | samples | RSS first (KiB) | RSS at warm-up (KiB) | RSS end (KiB) | RSS max (KiB) | slope KiB/1000 steps | slope KiB/min | fds min | fds max | fds after warm-up |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
bad = []
for k in order:
    s = by[k]
    w = [x for x in s if x[1] >= warmup]
    per_step = slope([x[1] for x in w], [x[2] for x in w]) * 1000
    per_min = slope([x[0] for x in w], [x[2] for x in w]) * 60
    fw = sorted({x[3] for x in w})
    print(f"| {k} | {len(s)} | {s[0][2]} | {w[0][2] if w else '-'} | {s[-1][2]} | {max(x[2] for x in s)} | {per_step:.1f} | {per_min:.1f} | "
          f"{min(x[3] for x in s)} | {max(x[3] for x in s)} | {'constant ' + str(fw[0]) if len(fw) == 1 else ', '.join(map(str, fw))} |")
    # A leak shows as a count that stays higher: compare the lowest of the last 10 samples with the
    # lowest of the first 10 after warm-up (a checkpoint being written holds one more for a moment).
    leak = bool(w) and min(x[3] for x in w[-10:]) > min(x[3] for x in w[:10])
    if k != "mpirun" and (not w or per_step > max_slope or leak): bad.append(k)
ok = status == 0 and diverged == 0 and not bad
print(f"\nsoak: {'PASS' if ok else 'FAIL'}: exit {status}, {diverged} divergence message(s), "
      f"{'no rank with a rising RSS or descriptor count' if not bad else 'flagged: ' + ', '.join(bad)}")
sys.exit(0 if ok else 1)
EOF
