#!/usr/bin/env bash
# The main job on the embedded default: make the synthetic corpus and preprocess it.
#   bash quickstart.sh [--out_dir runs/quickstart] [--num_clips 10] [--seed 0]
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python}
out_dir=runs/quickstart num_clips=10 seed=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out_dir) out_dir=$2; shift 2 ;;
    --num_clips) num_clips=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    -h|--help) sed -n '2,3p' "$0" | sed 's/^# //'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
corpus=$out_dir/corpus
start=$(date +%s)
$PYTHON -m preparation.make_synthetic --out_dir "$corpus" --num_clips "$num_clips" --seed "$seed"
bash preprocess.sh --data_root "$corpus" --nshard 2
echo
echo "quickstart finished in $(( $(date +%s) - start ))s"
echo "  corpus:      $corpus/main/<speaker>/<clip>.mp4 + .txt, splits in $corpus/{train,valid,test}.txt"
echo "  audio:       $corpus/audio/<speaker>/<clip>.wav (16 kHz mono)"
echo "  face boxes:  $corpus/bbx/<speaker>/<clip>.npy (frames x 4: x1 y1 x2 y2)"
echo "  ground truth: $corpus/gt/<speaker>/<clip>.npz (mouth opening, face box per frame)"
