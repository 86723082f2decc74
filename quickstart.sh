#!/usr/bin/env bash
# The main job on the embedded default, end to end on CPU: synthetic corpus -> preprocessing ->
# a small lip-reading expert (train_expert.py) -> TalkLip at the cpu preset through every training
# stage on a fixed schedule (train.py) -> test-split synthesis before and after training (inf_test.py)
# -> PSNR/SSIM and mouth sync against the corpus' ground truth -> one clip dubbed with another's speech.
#   bash quickstart.sh [--out_dir runs/quickstart] [--num_clips 40] [--seed 0] [--expert_steps 200]
#                      [--stage_steps 140,70,90] [--ckpt_interval 40]
# Writes <out_dir>/summary.json, mouth_sync.png and samples.png, and prints what they hold.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python}
out_dir=runs/quickstart num_clips=40 seed=0 expert_steps=200 stage_steps=140,70,90 ckpt_interval=40
while [ $# -gt 0 ]; do
  case "$1" in
    --out_dir) out_dir=$2; shift 2 ;;
    --num_clips) num_clips=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --expert_steps) expert_steps=$2; shift 2 ;;
    --stage_steps) stage_steps=$2; shift 2 ;;
    --ckpt_interval) ckpt_interval=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# //'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
c=$out_dir/corpus
t0=$(date +%s); stamp() { echo $(( $(date +%s) - t0 )); }
declare -A took

s=$(stamp)
$PYTHON -m preparation.make_synthetic --out_dir "$c" --num_clips "$num_clips" --seed "$seed"
PYTHON=$PYTHON bash "$root/preprocess.sh" --data_root "$c" --nshard 2
took[data]=$(( $(stamp) - s ))

s=$(stamp)
$PYTHON "$root/train_expert.py" --file_dir "$c" --video_root "$c/main" --word_root "$c/main" --out "$out_dir/expert.pt" \
  --out_json "$out_dir/expert.json" --steps "$expert_steps" --seed "$seed" --device cpu --no_progress
took[expert]=$(( $(stamp) - s ))

# Settings measured on this corpus (README, "The quickstart's settings"): the cpu preset (4x narrower
# generator and discriminator) learns the face in minutes; each stage runs a fixed number of steps
# (--stage_steps), so stage 2 is reached on any machine; lr 2e-3 (+1 dB PSNR over 1e-3 in 260 steps);
# the discriminator learns at 1e-4 (at the generator's rate the narrow one stops learning), and the
# perceptual loss weighs 0.02 (at the paper's 0.07 it pulls a 300-step generator off the speech:
# mouth sync 0.73 vs 0.92); the learning rates fall to a tenth over stage 2 (--lr_warmdown: the last
# weights are steadier: mouth sync 0.90 vs 0.84, +1.5 dB); a 10-step window lets the divergence
# rollback act within this short run.
IFS=, read -r steps0 steps1 steps2 <<< "$stage_steps"
s=$(stamp)
$PYTHON "$root/train.py" --file_dir "$c" --video_root "$c/main" --audio_root "$c/audio" --bbx_root "$c/bbx" \
  --word_root "$c/main" --avhubert_path "$out_dir/expert.pt" --checkpoint_dir "$out_dir/train" \
  --generator_preset cpu --batch_size 2 --windows_per_clip 4 --valid_clips 2 --num_worker 0 \
  --lr 2e-3 --disc_lr 1e-4 --perp_w 0.02 --stage_min_steps "$stage_steps" --stage_max_steps "$stage_steps" \
  --max_steps $(( steps0 + steps1 + steps2 )) --lr_warmdown "$steps2" \
  --ckpt_interval "$ckpt_interval" --log_interval 10 --diverge_steps 10 --keep_last 1000 \
  --seed "$seed" --device cpu --no_progress
took[train]=$(( $(stamp) - s ))

first=$(ls "$out_dir"/train/checkpoint_step*.pth | head -1); last=$(ls "$out_dir"/train/checkpoint_step*.pth | tail -1)
s=$(stamp)
for tag in before after; do
  ckpt=$first; [ $tag = after ] && ckpt=$last
  $PYTHON "$root/inf_test.py" --filelist "$c/test.txt" --video_root "$c/main" --audio_root "$c/audio" \
    --bbx_root "$c/bbx" --save_root "$out_dir/synt_$tag" --ckpt_path "$ckpt" --device cpu --no_progress
  $PYTHON -m evaluation.visual_quality --synt_root "$out_dir/synt_$tag" --orig_root "$c/main" --bbx_root "$c/bbx" \
    --filelist "$c/test.txt" --out_json "$out_dir/quality_$tag.json" --no_progress
  $PYTHON -m evaluation.mouth_sync --video_root "$out_dir/synt_$tag" --gt_root "$c/gt" --filelist "$c/test.txt" \
    --out_json "$out_dir/mouth_sync_$tag.json" --no_progress
done
took[synthesis_eval]=$(( $(stamp) - s ))

s=$(stamp); clip=$(head -1 "$c/test.txt"); speech=$(head -1 "$c/valid.txt")
$PYTHON "$root/inf_demo.py" --video_path "$c/main/$clip.mp4" --wav_path "$c/audio/$speech.wav" --ckpt_path "$last" \
  --save_path "$out_dir/dubbed" --device cpu --no_progress
$PYTHON -m evaluation.mouth_sync --dub "$out_dir/dubbed.mp4" --face_gt "$c/gt/$clip.npz" --speech_gt "$c/gt/$speech.npz" \
  --out_json "$out_dir/mouth_sync_dubbed.json"
took[dub]=$(( $(stamp) - s ))

$PYTHON -m evaluation.report --run_dir "$out_dir" --clip "$clip" --dub_face "$clip" --dub_speech "$speech" \
  --seconds "data=${took[data]},expert=${took[expert]},train=${took[train]},synthesis_and_eval=${took[synthesis_eval]},dub=${took[dub]},total=$(stamp)"
