#!/usr/bin/env bash
# The main job on the embedded default, end to end on CPU: synthetic corpus -> preprocessing ->
# a small lip-reading expert (train_expert.py) -> TalkLip through every training stage (train.py)
# -> test-split synthesis (inf_test.py) -> PSNR/SSIM before and after training -> one dubbed clip.
#   bash quickstart.sh [--out_dir runs/quickstart] [--num_clips 10] [--seed 0]
#                      [--expert_steps 60] [--train_steps 16] [--ckpt_interval 2]
# Writes <out_dir>/summary.json (paths, metrics before/after, stage reached, timings).
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python}
out_dir=runs/quickstart num_clips=10 seed=0 expert_steps=60 train_steps=16 ckpt_interval=2
while [ $# -gt 0 ]; do
  case "$1" in
    --out_dir) out_dir=$2; shift 2 ;;
    --num_clips) num_clips=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --expert_steps) expert_steps=$2; shift 2 ;;
    --train_steps) train_steps=$2; shift 2 ;;
    --ckpt_interval) ckpt_interval=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# //'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
c=$out_dir/corpus
t0=$(date +%s); stamp() { echo $(( $(date +%s) - t0 )); }
declare -A took
s=$(stamp); $PYTHON -m preparation.make_synthetic --out_dir "$c" --num_clips "$num_clips" --seed "$seed"
bash "$root/preprocess.sh" --data_root "$c" --nshard 2; took[data]=$(( $(stamp) - s ))
s=$(stamp); $PYTHON "$root/train_expert.py" --file_dir "$c" --video_root "$c/main" --word_root "$c/main" \
  --out "$out_dir/expert.pt" --steps "$expert_steps" --seed "$seed" --device cpu --no_progress; took[expert]=$(( $(stamp) - s ))
s=$(stamp); $PYTHON "$root/train.py" --file_dir "$c" --video_root "$c/main" --audio_root "$c/audio" --bbx_root "$c/bbx" \
  --word_root "$c/main" --avhubert_path "$out_dir/expert.pt" --checkpoint_dir "$out_dir/train" --batch_size 1 \
  --windows_per_clip 1 --valid_clips 1 --num_worker 0 --ckpt_interval "$ckpt_interval" --patience 0 \
  --max_steps "$train_steps" --keep_last 1000 --lr 1e-3 --seed "$seed" --device cpu --no_progress; took[train]=$(( $(stamp) - s ))
first=$(ls "$out_dir"/train/checkpoint_step*.pth | head -1); last=$(ls "$out_dir"/train/checkpoint_step*.pth | tail -1)
s=$(stamp)
for tag in before after; do
  ckpt=$first; [ $tag = after ] && ckpt=$last
  $PYTHON "$root/inf_test.py" --filelist "$c/test.txt" --video_root "$c/main" --audio_root "$c/audio" \
    --bbx_root "$c/bbx" --save_root "$out_dir/synt_$tag" --ckpt_path "$ckpt" --device cpu --no_progress
  $PYTHON -m evaluation.visual_quality --synt_root "$out_dir/synt_$tag" --orig_root "$c/main" --bbx_root "$c/bbx" \
    --filelist "$c/test.txt" --out_json "$out_dir/quality_$tag.json" --no_progress
done; took[synthesis_eval]=$(( $(stamp) - s ))
s=$(stamp); clip=$(head -1 "$c/test.txt"); speech=$(sed -n 1p "$c/valid.txt")
$PYTHON "$root/inf_demo.py" --video_path "$c/main/$clip.mp4" --wav_path "$c/audio/$speech.wav" --ckpt_path "$last" \
  --save_path "$out_dir/dubbed" --device cpu; took[dub]=$(( $(stamp) - s ))
$PYTHON - "$out_dir" "${took[data]}" "${took[expert]}" "${took[train]}" "${took[synthesis_eval]}" "${took[dub]}" "$(stamp)" <<'PY'
import json, sys
out, data, expert, train, synth, dub, total = sys.argv[1], *map(int, sys.argv[2:])
q = {t: json.load(open(f"{out}/quality_{t}.json")) for t in ("before", "after")}
run = json.load(open(f"{out}/train/train_summary.json"))
summary = {"paths": {"corpus": f"{out}/corpus", "expert": f"{out}/expert.pt", "checkpoints": f"{out}/train",
                     "generator": run["checkpoint"], "tensorboard": f"{out}/train/tb",
                     "synthesized_before": f"{out}/synt_before", "synthesized_after": f"{out}/synt_after",
                     "dubbed": f"{out}/dubbed.mp4"},
           "metrics": {t: {"psnr": q[t]["psnr"], "ssim": q[t]["ssim"]} for t in q},
           "training": {"steps": run["step"], "stage_reached": run["stage"], "stage_name": run["stage_name"],
                        "validation": [{k: h[k] for k in ("step", "stage", "l1", "wer")} for h in run["history"]]},
           "seconds": {"data": data, "expert": expert, "train": train, "synthesis_and_eval": synth, "dub": dub,
                       "total": total}}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
m = summary["metrics"]
print(f"\nquickstart finished in {total}s")
print(f"  PSNR/SSIM before training {m['before']['psnr']:.2f} dB / {m['before']['ssim']:.3f}, "
      f"after {m['after']['psnr']:.2f} dB / {m['after']['ssim']:.3f}")
print(f"  training reached stage {run['stage']} ({run['stage_name']}) in {run['step']} steps")
for k, v in summary["paths"].items():
    print(f"  {k + ':':20s}{v}")
print(f"  {'summary:':20s}{out}/summary.json")
PY
