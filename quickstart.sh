#!/usr/bin/env bash
# The main job, end to end on 2 CPU cores in ~15 minutes: a readable synthetic talking-face corpus (a
# GRID-like grammar, speech rendered phoneme by phoneme, a mouth drawn per viseme) is generated and
# preprocessed; a lip-reading expert and an independent observer (shipped in weights/) read it; TalkLip
# trains through all three stages, the last under the expert's lip loss; the test split is synthesized
# before and after training and scored (PSNR/SSIM, mouth sync against the truth, the observer's WER); one
# clip is dubbed with another clip's speech. Writes DIR/summary.json, mouth_sync.png, samples.png and
# observer_wer.png, and prints the numbers.
#   bash quickstart.sh [--out_dir DIR] [--seed S] [--precision auto|bf16|fp32] [--ablation] [--train_readers]
#                      [--grammar grid|words]
#   --out_dir DIR       where everything goes (runs/quickstart)
#   --seed S            the corpus' and training's seed (0)
#   --precision P       auto: bf16 where the CPU computes it natively (AVX512-BF16 or AMX), else fp32
#   --ablation          also train with the lip loss off, from this run's state where stage 2 begins
#   --train_readers     train the expert and the observer in the run instead of using weights/ (~6 minutes more)
#   --grammar G         the corpus: grid (the readable corpus) or words (random words: nothing to read)
#   --grid_root G       the real main job instead, on GRID speaker s1 (a local copy: s1/ videos and alignments/;
#                       Cooke et al. 2006, CC BY 4.0): prepared, TalkLip trained on the real face under the shipped
#                       GRID readers, the 50 held-out sentences scored beside their real videos, one dubbed with
#                       another's speech; ~40 minutes on 2 cores (--out_dir runs/grid; --train_readers and --grammar
#                       do not apply: the GRID readers' commands are in docs/real_data.md)
#   --data_dir DIR      with --grid_root: where GRID is prepared (<out_dir>/data); runs that share it prepare once
# The experiments' research options (docs/experiments/) are bench/experiment.sh's and bench/grid_experiment.sh's.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
args=() grid_root="" data_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out_dir|--seed|--precision|--grammar)
      [ $# -ge 2 ] || { echo "error: $1 needs a value (see --help)" >&2; exit 2; }
      args+=("$1" "$2"); shift 2 ;;
    --ablation|--train_readers) args+=("$1"); shift ;;
    --grid_root)
      [ $# -ge 2 ] || { echo "error: $1 needs a value (see --help)" >&2; exit 2; }
      grid_root=$2; shift 2 ;;
    --data_dir)
      [ $# -ge 2 ] || { echo "error: $1 needs a value (see --help)" >&2; exit 2; }
      data_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help; the research options are bench/experiment.sh's)" >&2; exit 2 ;;
  esac
done
if [ -n "$grid_root" ]; then
  for a in "${args[@]+"${args[@]}"}"; do
    case "$a" in --train_readers|--grammar)
      echo "error: $a does not apply with --grid_root (the GRID readers ship in weights/; their commands are in" \
           "docs/real_data.md)" >&2; exit 2 ;; esac
  done
  exec bash "$root/bench/grid_experiment.sh" --grid_root "$grid_root" ${data_dir:+--data_dir "$data_dir"} "${args[@]+"${args[@]}"}"
fi
[ -z "$data_dir" ] || { echo "error: --data_dir goes with --grid_root" >&2; exit 2; }
exec bash "$root/bench/experiment.sh" "${args[@]+"${args[@]}"}"
