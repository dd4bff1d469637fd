#!/usr/bin/env bash
# The bag-of-tricks ablation on Fashion-MNIST: resnet20, np=2 ranks with SyncBN,
# the same epoch budget for every row, two seeds each:
#   1 baseline: step schedule (×0.1 at 50% and 75% of training), no tricks
#   2 + warmup (0.2 epoch) and cosine decay
#   3 + label smoothing 0.1
#   4 + mixup α=0.2
#   5 + zero-γ and no bias decay
# Finished runs (runs/ablation/NAME/result.json) are kept: run it again to continue.
# Prints a markdown table of test accuracy (mean ± half the range over seeds).
# EPOCHS (default 3) and SEEDS (default "1 2") can be overridden.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
swift build -c release --product tricks-worker >&2
bin=$(pwd)/.build/release/tricks-worker
epochs="${EPOCHS:-3}"; seeds="${SEEDS:-1 2}"; np=2
root=runs/ablation
mkdir -p "$root"
flags=(-np "$np" -x OPENBLAS_NUM_THREADS=1 --bind-to none)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
(( np > $(nproc) )) && flags+=(--oversubscribe)
s1=$(awk "BEGIN{print $epochs*0.5}"); s2=$(awk "BEGIN{print $epochs*0.75}")
base=(--model resnet20 --epochs "$epochs" --batch-size 64 --lr 0.1 --bn sync --log-every 200)
declare -A cfg
cfg[1-baseline]="--lr-schedule step --lr-steps $s1,$s2"
cfg[2-cosine]="--lr-schedule cosine --warmup-epochs 0.2"
cfg[3-label-smoothing]="${cfg[2-cosine]} --label-smoothing 0.1"
cfg[4-mixup]="${cfg[3-label-smoothing]} --mixup 0.2"
cfg[5-zero-gamma-no-bias-decay]="${cfg[4-mixup]} --zero-gamma --no-bias-decay"
names=(1-baseline 2-cosine 3-label-smoothing 4-mixup 5-zero-gamma-no-bias-decay)
start=$(date +%s)
for name in "${names[@]}"; do
  for seed in $seeds; do
    dir="$root/$name-s$seed"
    [ -f "$dir/result.json" ] && continue
    echo "== $name seed $seed: ${cfg[$name]}" >&2
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    mpirun "${flags[@]}" "$bin" train "${base[@]}" ${cfg[$name]} --seed "$seed" --out "$dir" > "$dir/log.txt" 2>&1 \
      || { echo "run $dir failed; see $dir/log.txt" >&2; exit 1; }
    tail -n 1 "$dir/log.txt" > "$dir/result.json"
  done
done
echo "wall time this invocation: $(( $(date +%s) - start )) s" >&2
echo "| # | configuration | test accuracy (mean ± half-range over seeds) | Δ vs previous row | runs |"
echo "|---|---|---:|---:|---|"
prev=""
for name in "${names[@]}"; do
  accs=$(for seed in $seeds; do f="$root/$name-s$seed/result.json"; [ -f "$f" ] && sed -n 's/.*"test_accuracy":\([0-9.]*\).*/\1/p' "$f"; done)
  [ -z "$accs" ] && continue
  read -r mean half n <<<"$(echo "$accs" | awk '{s+=$1; if(NR==1||$1<mn)mn=$1; if(NR==1||$1>mx)mx=$1} END{printf "%.4f %.4f %d", s/NR, (mx-mn)/2, NR}')"
  delta=""; [ -n "$prev" ] && delta=$(awk "BEGIN{printf \"%+.2f\", 100*($mean-$prev)}")
  echo "| ${name%%-*} | ${name#*-} | $(awk "BEGIN{printf \"%.2f ± %.2f %%\", 100*$mean, 100*$half}") | $delta | $n |"
  prev=$mean
done
