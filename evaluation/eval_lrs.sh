#!/usr/bin/env bash
# Every metric of the paper on a synthesized folder, printed as the paper's table (markdown).
#   bash evaluation/eval_lrs.sh --synt_root SYNT --filelist test.txt --orig_root LRS2/main \
#       --bbx_root LRS2/bbx [--syncnet_path syncnet_v2.model] [--observer1_path observer1.pt] \
#       [--observer2_path conformer.pth] [--out_dir DIR] [--lrw] [--device cuda]
# All flags go to `python -m evaluation.eval_all` (see its --help). Results: DIR/results.json,
# per_clip.csv, table.md; a rerun reuses finished clips.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" -m evaluation.eval_all "$@"
