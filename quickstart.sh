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
# The experiments' research options (docs/experiments/) are bench/experiment.sh's.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out_dir|--seed|--precision|--grammar)
      [ $# -ge 2 ] || { echo "error: $1 needs a value (see --help)" >&2; exit 2; }
      args+=("$1" "$2"); shift 2 ;;
    --ablation|--train_readers) args+=("$1"); shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help; the research options are bench/experiment.sh's)" >&2; exit 2 ;;
  esac
done
exec bash "$root/bench/experiment.sh" "${args[@]+"${args[@]}"}"
