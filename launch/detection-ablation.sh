#!/usr/bin/env bash
# The detector's Bag-of-Freebies table (Zhang et al. 2019, arXiv 1902.04103, Table 4) on the
# Fashion-MNIST scenes: each row adds one trick to the row above, every row is trained from the
# same init for each seed, and the table gives test mAP@0.5 (VOC07 11-point and area) per seed.
#
#   1 baseline        8 ranks × 1 image, BatchNorm per rank (local), step schedule (×0.1 at 0.8
#                     and 0.9 of the run), fixed 128 × 128 input
#   2 + SyncBN        the same 8 ranks × 1 image with BatchNorm over all 8 images
#   3 + random shapes inputs drawn from 96, 128, 160 every 10 steps
#   4 + warmup, cosine linear warmup, then cosine decay
#   5 + label smoothing
#   6 + mixup         detection mixup, Beta(1.5, 1.5), off for the last epoch
#
# Rows 1 and 2 run under `mpirun -np 8` (oversubscribed here). Rows 3–6 run as one process on
# the 8-image batch: SyncBatchNorm over 8 ranks of one image computes what one process computes
# on the 8 images (MPITests.testDetectorAtOneImagePerWorkerMatchesOneProcess checks it to 1.7e-8),
# the shuffle, augmentation, mixup partners and shapes do not depend on the number of ranks, and
# one process trains 2.3× faster than 8 oversubscribed ones on two cores. Single-process runs of
# the two seeds go side by side, one thread each.
#
#   bash launch/detection-ablation.sh             # about 66 minutes on 2 quiet cores
#   EPOCHS=1 SEEDS="0" bash launch/detection-ablation.sh     # a quick look
#
# Environment: EPOCHS (3), SEEDS ("0 1"), LR (0.01), OUT (runs/detection-ablation), ROWS (all:
# "1 2 3 4 5 6"). Each run's log, JSON summary, metrics.jsonl and checkpoint land in
# OUT/<k>-<trick>-s<seed>/; the table goes to OUT/table.md, the curves of seed 0 to OUT/curves.svg and
# the best row's detections on test images to OUT/detections.png.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${EPOCHS:-3}"; seeds="${SEEDS:-0 1}"; lr="${LR:-0.01}"; out="${OUT:-runs/detection-ablation}"; rows="${ROWS:-1 2 3 4 5 6}"
bash launch/setup.sh
swift build -c release --product tricks-detect >&2
swift build -c release --product tricks-worker >&2
bin=.build/release/tricks-detect
[ -f runs/scenes/ImageSets/Main/train.txt ] || .build/release/tricks-worker make-scenes --out runs/scenes >&2
mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1
mpi=(mpirun -np 8 --oversubscribe --bind-to none -x OPENBLAS_NUM_THREADS=1)
[ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)

names=("" "baseline (local BN, 8 × 1 image)" "+ SyncBN (8 × 1 image)" "+ random shapes" "+ warmup and cosine" "+ label smoothing" "+ mixup")
slug=("" baseline syncbn shapes cosine smoothing mixup)
paper=("" "80.25" "80.81" "81.23" "81.69" "82.14" "83.68")
flags() {   # the cumulative flags of row $1
  local f=(--batch-size 8 --epochs "$epochs" --lr "$lr" --data-shape 128 --threads 1 --log-every 50)
  (( $1 == 1 )) && f+=(--bn local) || f+=(--bn sync)
  (( $1 >= 3 )) && f+=(--random-shapes 96:160)
  (( $1 >= 4 )) && f+=(--lr-schedule cosine --warmup-epochs 0.5) || f+=(--lr-schedule step)
  (( $1 >= 5 )) && f+=(--label-smoothing)
  (( $1 >= 6 )) && f+=(--mixup 1.5 --mixup-off-epochs 1)
  echo "${f[@]}"
}
rundir() { echo "$out/$1-${slug[$1]}-s$2"; }
run() {   # row, seed: trains one run into its directory
  local dir f
  dir=$(rundir "$1" "$2"); f=$(flags "$1")
  mkdir -p "$dir"
  if (( $1 <= 2 )); then
    # shellcheck disable=SC2086
    "${mpi[@]}" "$bin" train $f --seed "$2" --out "$dir" > "$dir/summary.json" 2> "$dir/train.log"
  else
    # shellcheck disable=SC2086
    "$bin" train $f --seed "$2" --out "$dir" > "$dir/summary.json" 2> "$dir/train.log"
  fi
  echo "row $1 seed $2: $(tail -n 1 "$dir/summary.json")" >&2
}
for r in $rows; do
  if (( r <= 2 )); then
    for s in $seeds; do run "$r" "$s"; done
  else
    pids=()
    for s in $seeds; do run "$r" "$s" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p"; done
  fi
done

field() { sed -n "s/.*\"$1\":\([0-9.e-]*\).*/\1/p" "$2"; }
{
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%Y-%m-%d); $epochs epochs of $(wc -l < runs/scenes/ImageSets/Main/train.txt) scenes, global batch 8, lr $lr; seeds $seeds"
  echo
  echo "| row | mAP@0.5 (VOC07 11-point), mean | per seed | area mAP, mean | minutes per run | paper (YOLOv3, VOC07 test) |"
  echo "|---|---:|---:|---:|---:|---:|"
  for r in $rows; do
    m=(); a=(); t=()
    for s in $seeds; do
      m+=("$(field map50 "$(rundir "$r" "$s")/summary.json")"); a+=("$(field map50_area "$(rundir "$r" "$s")/summary.json")")
      t+=("$(field seconds "$(rundir "$r" "$s")/summary.json")")
    done
    awk -v name="${names[$r]}" -v paper="${paper[$r]}" -v m="${m[*]}" -v a="${a[*]}" -v t="${t[*]}" 'BEGIN {
      n = split(m, M, " "); split(a, A, " "); split(t, T, " ")
      for (i = 1; i <= n; i++) { sm += M[i]; sa += A[i]; st += T[i]; per = per (i > 1 ? ", " : "") sprintf("%.4f", M[i]) }
      printf "| %s | %.4f | %s | %.4f | %.1f | %s |\n", name, sm / n, per, sa / n, st / n / 60, paper }'
  done
} | tee "$out/table.md"
first=$(echo "$seeds" | awk '{print $1}')
dirs=(); for r in $rows; do dirs+=("$(rundir "$r" "$first")"); done
.build/release/tricks-worker plot "${dirs[@]}" --output "$out/curves.svg" >&2
last=$(echo "$rows" | awk '{print $NF}')
"$bin" predict --checkpoint "$(rundir "$last" "$first")/model.safetensors" --threshold 0.3 --grid "$out/detections.png" \
  $(sed -n '1,8p' runs/scenes/ImageSets/Main/test.txt | sed 's|^|runs/scenes/JPEGImages/|; s|$|.jpg|') > "$out/detections.jsonl"
echo "wrote $out/table.md, $out/curves.svg, $out/detections.png" >&2
