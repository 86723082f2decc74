#!/usr/bin/env bash
# The main job with every research option: quickstart.sh runs it with the main job's options only;
# bench/lip_loss_sweep.py and the experiments (docs/experiments/) pass it the rest. End to end on CPU: a
# readable synthetic corpus -> preprocessing -> the lip-reading expert and an independent observer -> TalkLip at the cpu preset through every
# training stage on a fixed schedule (train.py) -> test-split synthesis before and after training
# (inf_test.py) -> PSNR/SSIM, mouth sync and the observer's WER against the corpus' ground truth -> one
# clip dubbed with another's speech.
# --grammar grid (the default): a GRID-like grammar, phonemes rendered one by one, a mouth drawn per
# viseme; the expert and the observer (another seed, used only to score) were trained once on it and
# ship in weights/ (--train_readers trains them in the run instead, ~6 more minutes). --ablation also
# trains with the lip loss off (same seed and schedule: stage 2 again, from the main run's state where
# it begins). --grammar words: random words, a mouth that opens with the loudness (nothing to read; the
# expert is trained in the run).
#   bash bench/experiment.sh [--out_dir runs/quickstart] [--grammar grid|words] [--num_clips N] [--seed 0]
#                      [--expert_steps N] [--stage_steps A,B,C] [--ckpt_interval N] [--lip_w W]
#                      [--ablation] [--train_readers] [--precision auto|bf16|fp32] [--lip_augment K]
#                      [--lip_ensemble E2.pt,E3.pt] [--av_jitter J] [--corpus_seed S] [--stage2_from RUN]
#                      [--lr_hold H] [--av_shift J] [--mouth_scale K] [--readers_from RUN] [--speech_snr DB]
#                      [--articulation A]
# --stage2_from RUN: train stage 2 only, from RUN's state where stage 2 begins (RUN: another --out_dir with
# the same corpus and stage 0-1 settings, whose steps before it are the same on the same machine, so this
# skips them; "before" is RUN's step-0 generator). --lr_hold H: the learning rates fall to a tenth over stage 2
# but its last H steps, which hold the tenth. --av_shift J: training reads each clip's speech up to J frames
# off its video, a new offset each time (train.py --av_shift; the corpus and the scoring stay in step).
# Writes <out_dir>/summary.json, mouth_sync.png, samples.png and observer_wer.png, and prints them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
out_dir=runs/quickstart grammar=grid num_clips="" seed=0 expert_steps="" stage_steps="" ckpt_interval=""
lip_w=1e-5 ablation=0 train_readers=0 precision=auto lip_augment=0 lip_ensemble="" av_jitter=0 corpus_seed="" stage2_from="" lr_hold=0 av_shift=0 mouth_scale="" readers_from="" speech_snr="" articulation=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out_dir) out_dir=$2; shift 2 ;;
    --grammar) grammar=$2; shift 2 ;;
    --num_clips) num_clips=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --expert_steps) expert_steps=$2; shift 2 ;;
    --stage_steps) stage_steps=$2; shift 2 ;;
    --ckpt_interval) ckpt_interval=$2; shift 2 ;;
    --lip_w) lip_w=$2; shift 2 ;;
    --ablation) ablation=1; shift ;;
    --train_readers) train_readers=1; shift ;;
    --precision) precision=$2; shift 2 ;;
    --lip_augment) lip_augment=$2; shift 2 ;;
    --lip_ensemble) lip_ensemble=$2; shift 2 ;;
    --av_jitter) av_jitter=$2; shift 2 ;;
    --corpus_seed) corpus_seed=$2; shift 2 ;;
    --stage2_from) stage2_from=$2; shift 2 ;;
    --lr_hold) lr_hold=$2; shift 2 ;;
    --av_shift) av_shift=$2; shift 2 ;;
    --mouth_scale) mouth_scale=$2; shift 2 ;;
    --readers_from) readers_from=$2; shift 2 ;;
    --speech_snr) speech_snr=$2; shift 2 ;;
    --articulation) articulation=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# //'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$grammar" in
  # words: 40 clips, all preprocessed; the expert reads its 24 training clips (200 steps).
  words) num_clips=${num_clips:-40} expert_steps=${expert_steps:-200} stage_steps=${stage_steps:-140,70,90}
         ckpt_interval=${ckpt_interval:-40} ;;
  # grid: split by sentence (a fixed fifth of the grammar is only ever test, another only valid); TalkLip
  # trains on 120 train clips and is scored on 20 test clips, the only ones preprocessed. 220 clips give
  # those (and 40 valid / 43 test for the shipped readers' check); readers trained in the run get 400
  # (241 train, mouth crops only, no boxes needed).
  grid) default_clips=220; [ "$train_readers" = 1 ] || [ -n "$readers_from" ] && default_clips=400
        num_clips=${num_clips:-$default_clips} expert_steps=${expert_steps:-300} stage_steps=${stage_steps:-400,200,300}
        ckpt_interval=${ckpt_interval:-60} ;;
  *) echo "error: --grammar must be grid or words, not $grammar" >&2; exit 2 ;;
esac
IFS=, read -r steps0 steps1 steps2 <<< "$stage_steps"
[[ "$lr_hold" =~ ^[0-9]+$ ]] && { [ "$lr_hold" = 0 ] || [ "$lr_hold" -lt "${steps2:-0}" ]; } || {
  echo "error: --lr_hold must be a number of steps below stage 2's $steps2 (--stage_steps $stage_steps), not $lr_hold" >&2; exit 2; }
[[ "$av_shift" =~ ^[0-9]+$ ]] || { echo "error: --av_shift must be a number of frames, not $av_shift" >&2; exit 2; }
number_between() { [[ "$1" =~ ^-?[0-9]*\.?[0-9]+$ ]] && awk -v k="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(k >= lo && k <= hi) }'; }
# --mouth_scale K (grid): the corpus' mouth at K x the photo's (the shipped readers read the default 1.3x only)
[ -z "$mouth_scale" ] || number_between "$mouth_scale" 0.5 2 || {
  echo "error: --mouth_scale must be a number from 0.5 to 2 (x the photo's mouth), not $mouth_scale" >&2; exit 2; }
[ -z "$mouth_scale" ] || [ "$grammar/$train_readers" = grid/1 ] || [ "$grammar/${readers_from:+from}" = grid/from ] || {
  echo "error: --mouth_scale needs --grammar grid and --train_readers or --readers_from (the shipped readers read the" \
       "default mouth only)" >&2; exit 2; }
# --readers_from RUN: the readers a --train_readers run trained (RUN/expert.pt, observer.pt, expert_2.pt, ...),
# for runs on the same corpus (--corpus_seed, --mouth_scale, --av_jitter as RUN's), so seeds share them
if [ -n "$readers_from" ]; then
  [ "$train_readers" = 0 ] && [ -f "$readers_from/expert.pt" ] && [ -f "$readers_from/observer.pt" ] || {
    echo "error: --readers_from (without --train_readers) must be a quickstart run folder with the expert.pt and" \
         "observer.pt its --train_readers made, not $readers_from" >&2; exit 2; }
  readers_from=$(cd "$readers_from" && pwd)
fi
corpus_flags=(); [ -n "$mouth_scale" ] && corpus_flags=(--mouth_scale "$mouth_scale")
# --speech_snr DB (grid): white noise under the corpus' speech, DB below its power; the picture is the noiseless
# corpus' own, so the shipped readers read it (make_synthetic.py --speech_snr_db)
[ -z "$speech_snr" ] || number_between "$speech_snr" -30 60 || {
  echo "error: --speech_snr must be a number of dB from -30 to 60, not $speech_snr" >&2; exit 2; }
[ -z "$speech_snr" ] || [ "$grammar" = grid ] || { echo "error: --speech_snr needs --grammar grid" >&2; exit 2; }
[ -n "$speech_snr" ] && corpus_flags+=(--speech_snr_db "$speech_snr")
# --articulation A (grid): each speaker opens, rounds and shows teeth in their own way, gains within exp(+-A)
# (make_synthetic.py --articulation), so the speech alone no longer fixes the mouth
[ -z "$articulation" ] || number_between "$articulation" 0 1 || {
  echo "error: --articulation must be a number from 0 to 1, not $articulation" >&2; exit 2; }
[ -z "$articulation" ] || [ "$grammar" = grid ] || { echo "error: --articulation needs --grammar grid" >&2; exit 2; }
[ -n "$articulation" ] && corpus_flags+=(--articulation "$articulation")
stage2_state() { printf '%s/train/state_step%09d.pt' "$1" $(( steps0 + steps1 )); }   # a run's state where stage 2 begins
# Training precision: bf16 autocast where the CPU computes bf16 in hardware (AVX512-BF16 or AMX: a step
# takes 0.6x the time at the same validation L1 and PSNR, README), fp32 elsewhere (emulated bf16 is slower).
case "$precision" in
  auto) precision=fp32; grep -qw -e avx512_bf16 -e amx_bf16 /proc/cpuinfo 2>/dev/null && precision=bf16 ;;
  bf16|fp32) ;;
  *) echo "error: --precision must be auto, bf16 or fp32, not $precision" >&2; exit 2 ;;
esac
bf16_flag=(); [ "$precision" = bf16 ] && bf16_flag=(--bf16)
if [ -n "$stage2_from" ]; then
  state=$(stage2_state "$stage2_from")
  [ -f "$state" ] || { echo "error: --stage2_from must be a quickstart run folder with train/${state##*/} (where stage 2" \
                            "begins under --stage_steps $stage_steps), not $stage2_from" >&2; exit 2; }
  stage2_from=$(cd "$stage2_from" && pwd)
fi
echo "training precision: $precision"
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
c=$out_dir/corpus l=$out_dir/corpus
t0=$(date +%s); stamp() { echo $(( $(date +%s) - t0 )); }
declare -A took

s=$(stamp)
# --av_jitter J (grid): each clip's mouth runs up to J frames before or behind its speech (make_synthetic.py);
# --corpus_seed S draws the corpus of seed S whatever --seed (training's), so seeds differ in training alone
$PYTHON -m preparation.make_synthetic --out_dir "$c" --num_clips "$num_clips" --seed "${corpus_seed:-$seed}" --grammar "$grammar" \
  --av_jitter_frames "$av_jitter" "${corpus_flags[@]+"${corpus_flags[@]}"}"
if [ "$grammar" = grid ]; then
  l=$out_dir/lists
  mkdir -p "$l"
  head -n 120 "$c/train.txt" > "$l/train.txt"; head -n 4 "$c/valid.txt" > "$l/valid.txt"
  head -n 20 "$c/test.txt" > "$l/test.txt"; cat "$l/train.txt" "$l/valid.txt" "$l/test.txt" > "$l/filelist.txt"
fi
PYTHON=$PYTHON bash "$root/preprocess.sh" --filelist "$l/filelist.txt" --video_root "$c/main" --audio_root "$c/audio" \
  --bbx_root "$c/bbx" --nshard 2
took[data]=$(( $(stamp) - s ))

# The expert (used by training) and, on the readable corpus, the observer (used only to score): the same
# recipe with another seed, so they share no weights and no data order. There each frame's viseme
# supervises the visual front end besides the transcript (--viseme_root): they read within 300 steps.
s=$(stamp)
# The expert also learns the speech (--audio_visual, AV-HuBERT's modality dropout): the generator's audio
# encoder starts from its encoder, as TalkLip's starts from an audio-visual AV-HuBERT. The observer reads
# video only.
readers=expert; reader_flags=()
[ "$grammar" = grid ] && readers="expert observer" reader_flags=(--batch_size 8 --lr 2e-3 --viseme_root "$c/gt" --test_filelist "$l/test.txt")
# --train_readers on the readable corpus also trains the lip-loss ensemble's two other experts (train.py
# --lip_ensemble; weights/grid_expert_2.pt, _3.pt): the expert's recipe, seeds +1 and +2, its vocabulary
[ "$grammar/$train_readers" = grid/1 ] && readers="expert expert_2 expert_3 observer"
declare -A reader_ckpt
for reader in $readers; do
  reader_ckpt[$reader]=$out_dir/$reader.pt
  shipped=$root/weights/${grammar}_$reader.pt
  [ -n "$readers_from" ] && shipped=$readers_from/$reader.pt
  if [ "$train_readers" = 0 ] && [ -f "$shipped" ]; then
    # trained once by `quickstart.sh --grammar grid --train_readers` (weights/README.md); the expert reads this
    # run's test clips (and blanked), the observer's reading of them is its ground-truth WER below
    reader_ckpt[$reader]=$shipped
    [ $reader = expert ] && $PYTHON "$root/train_expert.py" --evaluate --init "$shipped" --file_dir "$c" \
      --video_root "$c/main" --word_root "$c/main" --test_filelist "$l/test.txt" --out_json "$out_dir/$reader.json" \
      --device cpu --no_progress
    continue
  fi
  reader_seed=$seed modality=(); [ $reader = observer ] && reader_seed=$(( seed + 1000 ))
  [ "$grammar/$reader" = grid/expert ] && modality=(--audio_visual)
  case $reader in expert_*) reader_seed=$(( seed + ${reader#expert_} - 1 ))
                            modality=(--audio_visual --vocab_from "${reader_ckpt[expert]}") ;; esac
  $PYTHON "$root/train_expert.py" --file_dir "$c" --video_root "$c/main" --word_root "$c/main" --out "$out_dir/$reader.pt" \
    --out_json "$out_dir/$reader.json" --steps "$expert_steps" --seed "$reader_seed" --device cpu --no_progress \
    "${reader_flags[@]+"${reader_flags[@]}"}" "${modality[@]+"${modality[@]}"}"
done
took[readers]=$(( $(stamp) - s ))

# The observer reads a folder of test videos as the readers were trained to: the central crop of each
# frame, greedy decoding.
observe() {
  [ "$grammar" = grid ] || return 0
  $PYTHON -m evaluation.avhubert_wer --video_root "$1" --ckpt_path "${reader_ckpt[observer]}" --word_root "$c/main" \
    --roi center --beam 1 --filelist "$l/test.txt" --out_json "$out_dir/observer_$2.json" --no_progress
}
observe "$c/main" ground_truth

# Settings measured on the words corpus (README, "The quickstart's settings"): the cpu preset (4x narrower
# generator and discriminator) learns the face in minutes; each stage runs a fixed number of steps
# (--stage_steps), so stage 2 is reached on any machine; lr 2e-3 (+1 dB PSNR over 1e-3 in 260 steps);
# the discriminator learns at 1e-4 (at the generator's rate the narrow one stops learning), and the
# perceptual loss weighs 0.02 (at the paper's 0.07 it pulls a 300-step generator off the speech:
# mouth sync 0.73 vs 0.92); the learning rates fall to a tenth over stage 2 (--lr_warmdown: the last
# weights are steadier: mouth sync 0.90 vs 0.84, +1.5 dB); a 10-step window lets the divergence
# rollback act within this short run.
train_talklip() {        # checkpoint folder, then extra flags
  local folder=$1; shift
  $PYTHON "$root/train.py" --file_dir "$l" --video_root "$c/main" --audio_root "$c/audio" --bbx_root "$c/bbx" \
    --word_root "$c/main" --avhubert_path "${reader_ckpt[expert]}" --checkpoint_dir "$folder" \
    --generator_preset cpu --batch_size 2 --windows_per_clip 4 --valid_clips 2 --num_worker 0 \
    --lr 2e-3 --disc_lr 1e-4 --perp_w 0.02 --lip_w "$lip_w" --lip_augment "$lip_augment" --lip_ensemble "$lip_ensemble" --stage_min_steps "$stage_steps" \
    --stage_max_steps "$stage_steps" --max_steps $(( steps0 + steps1 + steps2 )) --lr_warmdown $(( steps2 - lr_hold )) --lr_hold "$lr_hold" --av_shift "$av_shift" \
    --ckpt_interval "$ckpt_interval" --log_interval 10 --diverge_steps 10 --keep_last 1000 \
    --seed "$seed" --device cpu --no_progress "${bf16_flag[@]+"${bf16_flag[@]}"}" "$@"
}
s=$(stamp)
branch=(); [ -n "$stage2_from" ] && branch=(--branch_from "$(stage2_state "$stage2_from")")
train_talklip "$out_dir/train" "${branch[@]+"${branch[@]}"}"
took[train]=$(( $(stamp) - s ))

score() {                # tag, generator checkpoint: synthesize the test clips and score them
  $PYTHON "$root/inf_test.py" --filelist "$l/test.txt" --video_root "$c/main" --audio_root "$c/audio" \
    --bbx_root "$c/bbx" --save_root "$out_dir/synt_$1" --ckpt_path "$2" --device cpu --no_progress
  $PYTHON -m evaluation.visual_quality --synt_root "$out_dir/synt_$1" --orig_root "$c/main" --bbx_root "$c/bbx" \
    --filelist "$l/test.txt" --out_json "$out_dir/quality_$1.json" --no_progress
  $PYTHON -m evaluation.mouth_sync --video_root "$out_dir/synt_$1" --gt_root "$c/gt" --filelist "$l/test.txt" \
    --out_json "$out_dir/mouth_sync_$1.json" --no_progress "${sync_flags[@]+"${sync_flags[@]}"}"
  observe "$out_dir/synt_$1" "$1"
}
# with --av_jitter the test videos' mouths are off their speech: the synthesized clips' mouth sync is scored
# against the opening the speech drives (evaluation/mouth_sync.py --against_speech)
sync_flags=(); [ "$av_jitter" = 0 ] || sync_flags=(--against_speech)
first=$(ls "${stage2_from:-$out_dir}"/train/checkpoint_step*.pth | head -1); last=$(ls "$out_dir"/train/checkpoint_step*.pth | tail -1)
s=$(stamp)
score before "$first"
score after "$last"
took[synthesis_eval]=$(( $(stamp) - s ))

# The same run with the lip loss off. --no_lip_loss changes nothing before stage 2, so the ablation branches
# from the main run's state where stage 2 begins (train.py saves one at every stage change): the same
# weights, bit for bit, as training it from step 0 (tests/test_train.py), in a third of the time.
if [ "$ablation" = 1 ]; then
  s=$(stamp)
  train_talklip "$out_dir/train_ablation" --no_lip_loss \
    --branch_from "$(stage2_state "$out_dir")"
  score ablation "$(ls "$out_dir"/train_ablation/checkpoint_step*.pth | tail -1)"
  took[ablation]=$(( $(stamp) - s ))
fi

s=$(stamp); clip=$(head -1 "$l/test.txt"); speech=$(head -1 "$l/valid.txt")
$PYTHON "$root/inf_demo.py" --video_path "$c/main/$clip.mp4" --wav_path "$c/audio/$speech.wav" --ckpt_path "$last" \
  --save_path "$out_dir/dubbed" --device cpu --no_progress
$PYTHON -m evaluation.mouth_sync --dub "$out_dir/dubbed.mp4" --face_gt "$c/gt/$clip.npz" --speech_gt "$c/gt/$speech.npz" \
  --out_json "$out_dir/mouth_sync_dubbed.json"
took[dub]=$(( $(stamp) - s ))

# Identity leakage: the test clips dubbed with silence (as inf_demo.py dubs, --reference own): how much the
# mouth still moves, and with the clips' own mouths (evaluation/leakage.py)
s=$(stamp)
$PYTHON -m evaluation.leakage --ckpt_path "$last" --video_root "$c/main" --gt_root "$c/gt" --filelist "$l/test.txt" \
  --out_root "$out_dir/silent" --out_json "$out_dir/leakage.json" --device cpu --no_progress
took[leakage]=$(( $(stamp) - s ))

$PYTHON -m evaluation.report --run_dir "$out_dir" --clip "$clip" --dub_face "$clip" --dub_speech "$speech" \
  --expert "${reader_ckpt[expert]}" ${reader_ckpt[observer]+--observer "${reader_ckpt[observer]}"} \
  --seconds "data=${took[data]},readers=${took[readers]},train=${took[train]},synthesis_and_eval=${took[synthesis_eval]},dub=${took[dub]},leakage=${took[leakage]}${took[ablation]+,ablation=${took[ablation]}},total=$(stamp)"
