#!/usr/bin/env bash
# The real main job with every research option: `quickstart.sh --grid_root G` runs it with the main job's options
# only; bench/lip_loss_sweep.py --grid_root passes it the rest. End to end on CPU, on real video: GRID (Cooke et
# al. 2006, CC BY 4.0) prepared from a local copy (preparation.grid: 160 x 160 mouth-centred copies, audio, face
# boxes, the fixed split by sentence) -> the readers of real mouths shipped in weights/ (grid_s1_expert.pt, the
# audio-visual expert whose encoder the generator's audio encoder starts from; grid_s1_observer.pt, video only,
# used only to score; grid_s1_syncnet.pt for LSE-C/D: docs/real_data.md) -> TalkLip at the cpu preset through every
# training stage (train.py), the last under the expert's lip loss -> the held-out test sentences synthesized before
# and after training (inf_test.py) and scored: PSNR/SSIM on the face crops, mouth sync against the real mouth,
# LSE-C/D and the observer's WER, beside the same measures on the real videos -> one held-out sentence's real
# 360 x 288 video dubbed with another held-out sentence's speech, read against that sentence's words and real mouth.
#   bash bench/grid_experiment.sh --grid_root G [--out_dir runs/grid] [--data_dir DIR] [--speaker s1] [--seed 0]
#                      [--precision auto|bf16|fp32] [--ablation] [--train_clips N] [--test_clips N]
#                      [--stage_steps A,B,C] [--ckpt_interval N] [--lip_w W] [--lip_augment K]
#                      [--lip_ensemble E2.pt,E3.pt] [--mouth_l1_w W] [--stage2_from RUN] [--read_last K]
# --data_dir DIR: where GRID is prepared (default <out_dir>/data); runs that share it prepare once (a rerun resumes).
# --train_clips N: TalkLip trains on the speaker's first N train sentences (only those, and every valid and test
# sentence, are prepared; default 600 of s1's 799); --test_clips N: scored on the first N test sentences (default all 50).
# --stage2_from RUN: train stage 2 only, from RUN's state where stage 2 begins (same data and stage 0-1 settings).
# --read_last K: the observer also reads the test split synthesized by each of the last K checkpoints of each arm
# (observer_last.json): an effect read at one step only may be that step's.
# --mouth_l1_w W: L1 at the mouth counts 1 + W (default 4; 0: the paper's plain L1; docs/real_data.md has why).
# --lip_w W: the expert's lip loss weight in stage 2 (default 1e-4, ten times the paper's 1e-5: docs/real_data.md).
# Writes <out_dir>/summary.json (with its targets), samples.png, mouth_sync.png, observer_wer.png, dub/dub_strip.mp4.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
grid_root="" out_dir=runs/grid data_dir="" speaker=s1 seed=0 precision=auto ablation=0 train_clips=600 test_clips=""
stage_steps=1200,300,500 ckpt_interval=100 lip_w=1e-4 lip_augment=0 lip_ensemble="" mouth_l1_w=4 stage2_from="" read_last=0
while [ $# -gt 0 ]; do
  case "$1" in
    --grid_root) grid_root=$2; shift 2 ;;
    --out_dir) out_dir=$2; shift 2 ;;
    --data_dir) data_dir=$2; shift 2 ;;
    --speaker) speaker=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --ablation) ablation=1; shift ;;
    --train_clips) train_clips=$2; shift 2 ;;
    --test_clips) test_clips=$2; shift 2 ;;
    --stage_steps) stage_steps=$2; shift 2 ;;
    --ckpt_interval) ckpt_interval=$2; shift 2 ;;
    --lip_w) lip_w=$2; shift 2 ;;
    --lip_augment) lip_augment=$2; shift 2 ;;
    --lip_ensemble) lip_ensemble=$2; shift 2 ;;
    --mouth_l1_w) mouth_l1_w=$2; shift 2 ;;
    --stage2_from) stage2_from=$2; shift 2 ;;
    --read_last) read_last=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# //'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$grid_root" ] && [ -d "$grid_root" ] || {
  echo "error: --grid_root must be a GRID folder (speaker folders of videos and alignments/), not '${grid_root}'" >&2; exit 2; }
for n in train_clips read_last; do
  [[ "${!n}" =~ ^[0-9]+$ ]] || { echo "error: --$n must be a whole number, not ${!n}" >&2; exit 2; }; done
[ -z "$test_clips" ] || [[ "$test_clips" =~ ^[1-9][0-9]*$ ]] || { echo "error: --test_clips must be a positive number, not $test_clips" >&2; exit 2; }
IFS=, read -r steps0 steps1 steps2 <<< "$stage_steps"
case "$precision" in
  auto) precision=fp32; grep -qw -e avx512_bf16 -e amx_bf16 /proc/cpuinfo 2>/dev/null && precision=bf16 ;;
  bf16|fp32) ;;
  *) echo "error: --precision must be auto, bf16 or fp32, not $precision" >&2; exit 2 ;;
esac
bf16_flag=(); [ "$precision" = bf16 ] && bf16_flag=(--bf16)
expert=$root/weights/grid_s1_expert.pt observer=$root/weights/grid_s1_observer.pt syncnet=$root/weights/grid_s1_syncnet.pt
stage2_state() { printf '%s/train/state_step%09d.pt' "$1" $(( steps0 + steps1 )); }
if [ -n "$stage2_from" ]; then
  state=$(stage2_state "$stage2_from")
  [ -f "$state" ] || { echo "error: --stage2_from must be a GRID run folder with train/${state##*/} (where stage 2" \
                            "begins under --stage_steps $stage_steps), not $stage2_from" >&2; exit 2; }
  stage2_from=$(cd "$stage2_from" && pwd)
fi
echo "training precision: $precision"
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
d=${data_dir:-$out_dir/data}; mkdir -p "$d"; d=$(cd "$d" && pwd)
l=$out_dir/lists
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
t0=$(date +%s); stamp() { echo $(( $(date +%s) - t0 )); }
declare -A took

# GRID prepared once (a rerun resumes; exit 3 says some clips were left out, each named, e.g. s1's damaged pbio7a)
s=$(stamp)
status=0
$PYTHON -m preparation.grid --grid_root "$grid_root" --out_dir "$d" --speakers "$speaker" --nshard 2 \
  --max_train "$(( train_clips > 0 ? train_clips : 1 ))" --no_progress || status=$?
[ "$status" = 0 ] || [ "$status" = 3 ] || exit "$status"
mkdir -p "$l"
grep "^$speaker/" "$d/train.txt" | head -n "$train_clips" > "$l/train.txt"
grep "^$speaker/" "$d/valid.txt" | head -n 4 > "$l/valid.txt"
grep "^$speaker/" "$d/test.txt" | head -n "${test_clips:-100000}" > "$l/test.txt"
[ "$(wc -l < "$l/train.txt")" -ge 2 ] && [ "$(wc -l < "$l/valid.txt")" -ge 1 ] && [ "$(wc -l < "$l/test.txt")" -ge 2 ] || {
  echo "error: $d holds too few prepared clips of $speaker (train $(wc -l < "$l/train.txt"), valid $(wc -l < "$l/valid.txt")," \
       "test $(wc -l < "$l/test.txt"); TalkLip needs 2 train, 1 valid and 2 test sentences): see $d/failures_grid.txt" >&2; exit 2; }
took[data]=$(( $(stamp) - s ))

# The readers, trained once on s1's train split and shipped (docs/real_data.md has their commands): the expert reads
# this run's test sentences (and blanked); the observer and SyncNet read the real test videos, the yardstick below.
s=$(stamp)
$PYTHON "$root/train_expert.py" --evaluate --init "$expert" --file_dir "$d" --video_root "$d/main" --word_root "$d/main" \
  --test_filelist "$l/test.txt" --out_json "$out_dir/expert.json" --device cpu --no_progress
observe() {              # folder of videos, tag[, list]
  $PYTHON -m evaluation.avhubert_wer --video_root "$1" --ckpt_path "$observer" --word_root "$d/main" --roi center \
    --beam 1 --filelist "${3:-$l/test.txt}" --out_json "$out_dir/observer_$2.json" --no_progress
}
lse() {                  # folder of videos, tag
  $PYTHON -m evaluation.sync_eval --data_root "$1" --initial_model "$syncnet" --filelist "$l/test.txt" \
    --out_json "$out_dir/lse_$2.json" --device cpu --no_progress
}
# with --stage2_from on the same test list, the scores that do not depend on this run (the real videos', and those of
# the step-0 generator both runs share) are that run's
reuse() {                # tag: copy its scores from the --stage2_from run, if it holds them for this test list
  [ -n "$stage2_from" ] && cmp -s "$l/test.txt" "$stage2_from/lists/test.txt" || return 1
  local f; for f in "${@:2}"; do [ -f "$stage2_from/${f}_$1.json" ] || return 1; done
  for f in "${@:2}"; do cp "$stage2_from/${f}_$1.json" "$out_dir/"; done
}
reuse ground_truth observer lse || { observe "$d/main" ground_truth; lse "$d/main" ground_truth; }
took[readers]=$(( $(stamp) - s ))

# TalkLip at the cpu preset, the synthetic main job's settings (docs/training.md), on real faces: stage 0 L1 +
# perceptual + GAN with the audio encoder (the expert's) frozen, stage 1 fine-tunes it, stage 2 adds the expert's
# lip-reading loss and the audio-visual contrastive loss; the learning rates fall to a tenth over stage 2.
train_talklip() {        # checkpoint folder, then extra flags
  local folder=$1; shift
  $PYTHON "$root/train.py" --file_dir "$l" --video_root "$d/main" --audio_root "$d/audio" --bbx_root "$d/bbx" \
    --word_root "$d/main" --avhubert_path "$expert" --checkpoint_dir "$folder" \
    --generator_preset cpu --batch_size 2 --windows_per_clip 4 --valid_clips 2 --num_worker 0 \
    --lr 2e-3 --disc_lr 1e-4 --perp_w 0.02 --lip_w "$lip_w" --lip_augment "$lip_augment" --lip_ensemble "$lip_ensemble" \
    --mouth_l1_w "$mouth_l1_w" --stage_min_steps "$stage_steps" --stage_max_steps "$stage_steps" \
    --max_steps $(( steps0 + steps1 + steps2 )) --lr_warmdown "$steps2" --ckpt_interval "$ckpt_interval" \
    --log_interval 50 --diverge_steps 10 --keep_last 1000 \
    --seed "$seed" --device cpu --no_progress "${bf16_flag[@]+"${bf16_flag[@]}"}" "$@"
}
s=$(stamp)
branch=(); [ -n "$stage2_from" ] && branch=(--branch_from "$(stage2_state "$stage2_from")")
train_talklip "$out_dir/train" "${branch[@]+"${branch[@]}"}"
took[train]=$(( $(stamp) - s ))

score() {                # tag, generator checkpoint
  $PYTHON "$root/inf_test.py" --filelist "$l/test.txt" --video_root "$d/main" --audio_root "$d/audio" \
    --bbx_root "$d/bbx" --save_root "$out_dir/synt_$1" --ckpt_path "$2" --device cpu --no_progress
  $PYTHON -m evaluation.visual_quality --synt_root "$out_dir/synt_$1" --orig_root "$d/main" --bbx_root "$d/bbx" \
    --filelist "$l/test.txt" --out_json "$out_dir/quality_$1.json" --no_progress
  $PYTHON -m evaluation.mouth_sync --video_root "$out_dir/synt_$1" --gt_root "$d/gt" --real_root "$d/main" \
    --filelist "$l/test.txt" --out_json "$out_dir/mouth_sync_$1.json" --no_progress
  observe "$out_dir/synt_$1" "$1"
  lse "$out_dir/synt_$1" "$1"
}
first=$(ls "${stage2_from:-$out_dir}"/train/checkpoint_step*.pth | head -1); last=$(ls "$out_dir"/train/checkpoint_step*.pth | tail -1)
s=$(stamp)
if reuse before quality mouth_sync observer lse && [ -d "$stage2_from/synt_before" ]; then
  ln -sfn "$stage2_from/synt_before" "$out_dir/synt_before"
else
  score before "$first"
fi
score after "$last"
took[synthesis_eval]=$(( $(stamp) - s ))

if [ "$ablation" = 1 ]; then
  s=$(stamp)
  train_talklip "$out_dir/train_ablation" --no_lip_loss --branch_from "$(stage2_state "$out_dir")"
  score ablation "$(ls "$out_dir"/train_ablation/checkpoint_step*.pth | tail -1)"
  took[ablation]=$(( $(stamp) - s ))
fi

# --read_last K: the observer's WER at each arm's last K checkpoints (the last is read above)
if [ "$read_last" -gt 1 ]; then
  s=$(stamp); rows=()
  for arm in train train_ablation; do
    [ -d "$out_dir/$arm" ] || continue
    for ckpt in $(ls "$out_dir/$arm"/checkpoint_step*.pth | tail -n "$read_last" | head -n $(( read_last - 1 ))); do
      tag=${arm}_$(basename "$ckpt" .pth | sed 's/checkpoint_step0*//')
      $PYTHON "$root/inf_test.py" --filelist "$l/test.txt" --video_root "$d/main" --audio_root "$d/audio" \
        --bbx_root "$d/bbx" --save_root "$out_dir/synt_$tag" --ckpt_path "$ckpt" --device cpu --no_progress
      observe "$out_dir/synt_$tag" "$tag"
      rows+=("\"$tag\": $(cat "$out_dir/observer_$tag.json" | $PYTHON -c 'import json,sys; print(json.load(sys.stdin)["wer"])')")
      rm -rf "$out_dir/synt_$tag"
    done
  done
  (IFS=,; echo "{${rows[*]}}") > "$out_dir/observer_last.json"
  took[read_last]=$(( $(stamp) - s ))
fi

# One held-out sentence's own 360 x 288 video (GRID's file) dubbed with another held-out sentence's speech; read as
# the copies are read (evaluation.grid_dub): the observer against the driving words, the mouth against their video.
s=$(stamp); clip=$(sed -n 1p "$l/test.txt" | cut -d' ' -f1); speech=$(sed -n 2p "$l/test.txt" | cut -d' ' -f1)
source_video=$($PYTHON -c "import numpy as np, sys; print(np.load(sys.argv[1])['source'])" "$d/gt/$clip.npz")
$PYTHON "$root/inf_demo.py" --video_path "$source_video" --wav_path "$d/audio/$speech.wav" --ckpt_path "$last" \
  --save_path "$out_dir/dubbed.mp4" --device cpu --no_progress
$PYTHON -m evaluation.grid_dub --dub "$out_dir/dubbed.mp4" --data_root "$d" --face "$clip" --speech "$speech" \
  --out_dir "$out_dir/dub"
echo "$speech" > "$out_dir/dub/list.txt"
observe "$out_dir/dub/framed" dubbed "$out_dir/dub/list.txt"
took[dub]=$(( $(stamp) - s ))

$PYTHON -m evaluation.grid_report --run_dir "$out_dir" --data_root "$d" --clip "$clip" --expert "$expert" \
  --observer "$observer" --syncnet "$syncnet" \
  --seconds "data=${took[data]},readers=${took[readers]},train=${took[train]},synthesis_and_eval=${took[synthesis_eval]},dub=${took[dub]}${took[ablation]+,ablation=${took[ablation]}}${took[read_last]+,read_last=${took[read_last]}},total=$(stamp)"
