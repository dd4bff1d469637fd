#!/usr/bin/env bash
# Kill trials: a training job under `mpirun -np 2` is killed whole (mpirun and every rank, SIGKILL)
# at random moments, in training, in evaluation and while a checkpoint is being written; after each
# kill the newest checkpoint in --out must be complete and load, and resuming from it to the last
# step must end with model.safetensors and checkpoint.safetensors byte for byte those of an
# uninterrupted run.
#
#   bash launch/kill-trials.sh [TRIALS]      # default 20
#
# The run: resnet20 on the first 2,048 training and 1,024 test images of Fashion-MNIST, global
# batch 32 (64 steps per epoch), 3 epochs (192 steps), a checkpoint every 4 steps and at each
# epoch end, evaluation at each epoch end, a progress line every step.
#
# Trials take turns at three ways of choosing the moment:
#   random      wait for the progress line of a random step (after the first checkpoint), then
#               SIGKILL after a random 0–2 steps' time (the steps' mean in the reference run,
#               evaluations and checkpoints included);
#   checkpoint  wait for the progress line of a random step, then for a
#               checkpoint.safetensors.tmp-PID file to appear, and kill at once;
#   eval        wait for the progress line of a random epoch's last step (the evaluation follows
#               that epoch's checkpoint), then kill after a random 0–0.6 of an evaluation's time.
# The phase column says what the kill interrupted, from what was there after it: a
# checkpoint temporary file (checkpoint write), the last progress line an epoch end with its
# checkpoint written and no evaluation line yet (evaluation), a metrics or model temporary file
# (metrics or model write), else training.
#
# Environment: KILL_SEED (1; seeds the random moments), KILL_DIR (runs/kill-trials). Each trial's
# files stay in KILL_DIR/trial-N (killed/: --out as the kill left it). Exits 1 if any trial's
# checkpoint is incomplete or does not load, or its resumed run is not bit-exact.
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${1:-20}"
dir="${KILL_DIR:-runs/kill-trials}"
RANDOM="${KILL_SEED:-1}"

# A launcher started from inside an MPI process would join its job.
for v in $(compgen -e | grep -E '^(OMPI|PMIX)_' || true); do unset "$v"; done

bash launch/setup.sh
swift build -c release --product tricks-worker >&2
bin=.build/release/tricks-worker

rm -rf "$dir"; mkdir -p "$dir"
python3 launch/fashion-subset.py "$dir/data" 2048 1024

spe=64; epochs=3; total=$((spe * epochs)); every=4
flags=(-np 2 -x OPENBLAS_NUM_THREADS=1 --bind-to none --oversubscribe)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
args=(train --data "$dir/data" --model resnet20 --batch-size 32 --epochs "$epochs" --checkpoint-every "$every" --log-every 1)
echo "kill-trials: mpirun ${flags[*]} $bin ${args[*]} --out OUT [--resume OUT]" | tee "$dir/command.txt"
echo "kill-trials: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%M:%SZ), KILL_SEED ${KILL_SEED:-1}" | tee -a "$dir/command.txt"

export LC_ALL=C
now() { echo "${EPOCHREALTIME/./}"; }   # microseconds
elapsed() { local d=$(( $1 - $2 )); printf '%d.%03d' $(( d / 1000000 )) $(( d % 1000000 / 1000 )); }

# Prefixes each line with the seconds since $1.
# (No command substitution: a fork per line falls behind on a loaded machine.)
stamp() {
  local t0=$1 l d
  while IFS= read -r l; do
    d=$(( ${EPOCHREALTIME/./} - t0 ))
    printf '%d.%03d %s\n' $(( d / 1000000 )) $(( d % 1000000 / 1000 )) "$l"
  done
}

# Starts the job in the background: sets job (mpirun's PID) and t0.
start_job() {   # OUT LOG [extra args...]
  local out=$1 log=$2; shift 2
  t0=$(now)
  mpirun "${flags[@]}" "$bin" "${args[@]}" --out "$out" "$@" > >(stamp "$t0" >"$log") 2>&1 &
  job=$!
}

# The ranks: mpirun's children running tricks-worker (waits until both are there).
ranks_of() {
  local i p rs
  for ((i = 0; i < 2000; i++)); do
    rs=()
    for p in $(pgrep -P "$1" 2>/dev/null || true); do
      [ "$(cat /proc/"$p"/comm 2>/dev/null)" = tricks-worker ] && rs+=("$p")
    done
    (( ${#rs[@]} == 2 )) && { echo "${rs[@]}"; return; }
    sleep 0.005
  done
}

# Step, completeness and format of a checkpoint: "STEP" or "bad: reason".
check_checkpoint() {
  python3 - "$1" <<'EOF'
import json, struct, sys
p = sys.argv[1]
try:
    b = open(p, "rb").read()
    (n,) = struct.unpack("<Q", b[:8])
    if n > len(b) - 8: raise ValueError(f"header length {n} past the end ({len(b)} bytes)")
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", {})
    if meta.get("format") != "tricks-training-checkpoint/1": raise ValueError(f"format {meta.get('format')}")
    size = {"F32": 4, "F64": 8, "I64": 8, "I32": 4}
    end = 0
    for k, t in h.items():
        a, e = t["data_offsets"]
        count = 1
        for s in t["shape"]: count *= s
        if e - a != count * size[t["dtype"]]: raise ValueError(f"{k}: {e - a} bytes for shape {t['shape']}")
        end = max(end, e)
    if 8 + n + end != len(b): raise ValueError(f"data ends at {8 + n + end}, file holds {len(b)} bytes (truncated)")
    if "optimizer.momentum_buffer" not in h: raise ValueError("no momentum buffer")
    print(meta["step"])
except Exception as e:
    print(f"bad: {e}")
EOF
}

# Waits until the job's log has a line matching $1 (or the job has ended).
wait_for_line() {
  until grep -q "$1" "$2" 2>/dev/null; do
    kill -0 "$job" 2>/dev/null || return 0
    sleep 0.01
  done
}

# The reference: uninterrupted.
ref="$dir/reference"
mkdir -p "$ref"
start_job "$ref/out" "$ref/log"
status=0; wait "$job" || status=$?
sleep 0.2
[ "$status" = 0 ] || { echo "kill-trials: the reference run failed (status $status):"; tail -5 "$ref/log"; exit 1; }
ref_seconds=$(tail -1 "$ref/log" | cut -d' ' -f1)
ref_model=$(sha256sum <"$ref/out/model.safetensors" | cut -c1-16)
ref_ckpt=$(sha256sum <"$ref/out/checkpoint.safetensors" | cut -c1-16)
step_seconds=$(awk '$2 == "step" { n++; if (n == 2) a = $1; b = $1 } END { printf "%.3f", (b - a) / (n - 2) }' "$ref/log")
eval_seconds=$(awk -v e="eval after step $spe " 'index($0, "step '"$spe/"'") { t = $1 } index($0, e) { printf "%.3f", $1 - t; exit }' "$ref/log")
echo "kill-trials: reference: $total steps in ${ref_seconds} s, a step ≈ ${step_seconds} s with its share of evaluations and checkpoints, an evaluation ≈ ${eval_seconds} s;" \
     "model.safetensors sha256 ${ref_model}…, checkpoint.safetensors ${ref_ckpt}…"

methods=(random checkpoint eval)
declare -a rows
failures=0
declare -A phases
for ((k = 1; k <= trials; k++)); do
  method=${methods[$(( (k - 1) % 3 ))]}
  tdir="$dir/trial-$k"; out="$tdir/out"; mkdir -p "$tdir"
  # A job that ends before its kill (the chosen moment came after the last write) is run again
  # with new draws, up to 3 times.
  for ((try = 1; try <= 3; try++)); do
  rm -rf "$out"
  # A random fraction in [0, 1) with 4 digits.
  frac=$(awk -v r=$(( RANDOM % 10000 )) 'BEGIN { printf "%.4f", r / 10000 }')
  start_job "$out" "$tdir/log"
  read -r -a rk <<<"$(ranks_of "$job")"
  (( ${#rk[@]} == 2 )) || { kill -KILL "$job"; echo "kill-trials: trial $k: the ranks did not start"; exit 1; }
  case $method in
    random)
      # The progress line of a random step after the first checkpoint, then up to 2 steps' time.
      s=$(( every + RANDOM % (total - every) ))
      wait_for_line "^[0-9.]* step $s/" "$tdir/log"
      sleep "$(awk -v t="$step_seconds" -v f="$frac" 'BEGIN { printf "%.3f", f * 2 * t }')" ;;
    checkpoint)
      s=$(( every + RANDOM % (total - 2 * every) ))
      wait_for_line "^[0-9.]* step $s/" "$tdir/log"
      n=0
      until compgen -G "$out/checkpoint.safetensors.tmp-*" >/dev/null; do
        (( ++n % 1000 == 0 )) && ! kill -0 "$job" 2>/dev/null && break
      done ;;
    eval)
      e=$(( RANDOM % epochs + 1 ))
      wait_for_line "^[0-9.]* step $((e * spe))/" "$tdir/log"
      sleep "$(awk -v s="$eval_seconds" -v f="$frac" 'BEGIN { printf "%.3f", f * 0.6 * s }')" ;;
  esac
  alive=yes; kill -0 "$job" 2>/dev/null || alive=no
  kill -KILL "$job" "${rk[@]}" 2>/dev/null || true
  killed_at=$(elapsed "$(now)" "$t0")
  wait "$job" 2>/dev/null || true
  [ "$alive" = yes ] && break
  sleep 0.2
  done
  for p in "${rk[@]}"; do
    for ((i = 0; i < 100; i++)); do
      st=$(sed -n 's/^State:\s*\(.\).*/\1/p' /proc/"$p"/status 2>/dev/null || true)
      [ -z "$st" ] || [ "$st" = Z ] && break
      sleep 0.02
    done
  done
  sleep 0.2   # let the line stamper finish
  [ -d "$out" ] && cp -a "$out" "$tdir/killed"

  # What the kill interrupted.
  temps=$(cd "$out" && ls -1 | grep -c '\.tmp-' || true)
  last=$(grep -o '^[0-9.]* step [0-9]*/' "$tdir/log" | tail -1 | awk '{ print $3 }' | tr -d /)
  last=${last:-0}
  ckpt_step=$( [ -e "$out/checkpoint.safetensors" ] && check_checkpoint "$out/checkpoint.safetensors" || echo none)
  if [ "$alive" = no ]; then phase="finished before the kill"
  elif compgen -G "$out/checkpoint.safetensors.tmp-*" >/dev/null; then phase="checkpoint write"
  elif compgen -G "$out/*.tmp-*" >/dev/null; then phase="metrics or model write"
  elif (( last % spe == 0 && last > 0 )) && ! grep -q "eval after step $last " "$tdir/log" && [ "$ckpt_step" = "$last" ]; then phase="evaluation"
  elif (( last == 0 )); then phase="start-up"
  else phase="training"; fi
  phases[$phase]=$(( ${phases[$phase]:-0} + 1 ))

  # The newest checkpoint must be complete and load; the resumed run must end bit-exact.
  loads=no; exact=no; resumed_at="-"; leftover="-"
  if [[ "$ckpt_step" =~ ^[0-9]+$ ]]; then
    start_job "$out" "$tdir/resume.log" --resume "$out"
    rstatus=0; wait "$job" || rstatus=$?
    sleep 0.2
    resumed_at=$(sed -n 's/.*resumed from .* at step \([0-9]*\).*/\1/p' "$tdir/resume.log" | head -1)
    if [ "$resumed_at" = "$ckpt_step" ] || { [ "$ckpt_step" = "$total" ] && grep -q "nothing to train" "$tdir/resume.log"; }; then loads=yes; fi
    if [ "$rstatus" = 0 ] && cmp -s "$out/model.safetensors" "$ref/out/model.safetensors" \
       && cmp -s "$out/checkpoint.safetensors" "$ref/out/checkpoint.safetensors"; then exact=yes; fi
    leftover=$(cd "$out" && ls -1 | grep -c '\.tmp-' || true)
  fi
  [ "$loads" = yes ] && [ "$exact" = yes ] || failures=$((failures + 1))
  row=$(printf '| %2d | %-10s | %6.2f | %-16s | %3s | %4s | %d | %s | %-3s | %-3s |' "$k" "$method" "$killed_at" "$phase" "$last" "$ckpt_step" "$temps" "$leftover" "$loads" "$exact")
  rows+=("$row")
  echo "$row"
done

echo
echo "| trial | method | killed after (s) | phase | last step logged | newest checkpoint step | temp files after the kill | temp files after resuming | loads | resume bit-exact |"
echo "|---:|---|---:|---|---:|---:|---:|---:|---|---|"
printf '%s\n' "${rows[@]}"
summary=""
for p in training evaluation "checkpoint write" "metrics or model write" start-up "finished before the kill"; do
  [ -n "${phases[$p]:-}" ] && summary+="${summary:+, }$p ${phases[$p]}"
done
echo
if (( failures == 0 )); then
  echo "kill-trials: PASS: $trials trials ($summary); every newest checkpoint complete and loaded; every resumed run bit-exact (model.safetensors ${ref_model}…, checkpoint.safetensors ${ref_ckpt}…)"
else
  echo "kill-trials: FAIL: $failures of $trials trials failed ($summary)"
  exit 1
fi
