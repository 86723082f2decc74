#!/usr/bin/env bash
# Preprocess an LRS2/LRW-layout corpus: 16 kHz mono WAVs and per-frame face boxes, in N
# parallel shards on this machine. Finished clips are skipped, so a rerun resumes.
#
#   bash preprocess.sh --data_root DIR [--nshard N]       # synthetic corpus / LRS2 folder layout:
#        DIR/filelist.txt, DIR/main/<spk>/<clip>.mp4  ->  DIR/audio/...wav, DIR/bbx/...npy
#   bash preprocess.sh --filelist F --video_root V --audio_root A --bbx_root B [--nshard N]
#        [--s3fd_path P] [--detect_every 8] [--detect_max_side 640] [--overwrite]
# Paths are read from the folder you run it in, as your shell reads them; the end prints them absolute.
set -uo pipefail
root=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"      # the project's modules, from any folder
PYTHON=${PYTHON:-python}

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "error: $*" >&2; exit 2; }

data_root="" filelist="" video_root="" audio_root="" bbx_root=""
nshard=${NSHARD:-2} extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data_root) data_root=$2; shift 2 ;;
    --filelist) filelist=$2; shift 2 ;;
    --video_root) video_root=$2; shift 2 ;;
    --audio_root) audio_root=$2; shift 2 ;;
    --bbx_root) bbx_root=$2; shift 2 ;;
    --nshard) nshard=$2; shift 2 ;;
    --s3fd_path|--batch_size|--device|--smooth_window|--detect_every|--detect_max_side) extra+=("$1" "$2"); shift 2 ;;
    --overwrite) extra+=("$1"); shift ;;
    -h|--help) usage 0 ;;
    *) echo "error: unknown option $1" >&2; usage 2 ;;
  esac
done
if [ -n "$data_root" ]; then
  filelist=${filelist:-$data_root/filelist.txt}
  video_root=${video_root:-$data_root/main}
  audio_root=${audio_root:-$data_root/audio}
  bbx_root=${bbx_root:-$data_root/bbx}
fi
[ -n "$filelist" ] && [ -n "$video_root" ] && [ -n "$audio_root" ] && [ -n "$bbx_root" ] \
  || die "give --data_root DIR, or all of --filelist --video_root --audio_root --bbx_root"
[ -z "$data_root" ] || [ -d "$data_root" ] || die "data folder $data_root does not exist (from $PWD): pass --data_root"
absolute() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s' "$PWD/${1#./}" ;; esac; }
filelist=$(absolute "$filelist") video_root=$(absolute "$video_root")
audio_root=$(absolute "$audio_root") bbx_root=$(absolute "$bbx_root")
[ -f "$filelist" ] || die "file list $filelist does not exist: pass --filelist or --data_root"
grep -q '[^[:space:]]' "$filelist" || die "file list $filelist is empty: it needs one <speaker>/<clip> per line"
[ -d "$video_root" ] || die "video folder $video_root does not exist: pass --video_root"
[[ "$nshard" =~ ^[1-9][0-9]*$ ]] || die "--nshard must be a positive integer, got $nshard"
mkdir -p "$audio_root" "$bbx_root" || die "cannot create $audio_root or $bbx_root"

echo "preprocessing $(grep -c '[^[:space:]]' "$filelist") clips from $video_root in $nshard shards"
pids=() names=()
# Ctrl-C (SIGINT), SIGTERM and SIGHUP stop every shard: bash starts background children with SIGINT ignored, so
# they are sent SIGTERM here and waited for (each writes through a temporary, so no partial file stays,
# and a rerun resumes where they stopped).
stop() {
  trap - INT TERM HUP
  echo "interrupted: stopping ${#pids[@]} shard processes" >&2
  [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
  wait
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM
trap 'stop 129' HUP      # the terminal or ssh session closed: the same clean stop
for rank in $(seq 1 "$nshard"); do
  $PYTHON -m preparation.audio_extract --filelist "$filelist" --video_root "$video_root" \
    --audio_root "$audio_root" --rank "$rank" --nshard "$nshard" \
    $(printf '%s\n' "${extra[@]+"${extra[@]}"}" | grep -qx -- --overwrite && echo --overwrite) &
  pids+=($!) names+=("audio_extract $rank/$nshard")
  $PYTHON -m preparation.bbx_extract --filelist "$filelist" --video_root "$video_root" \
    --bbx_root "$bbx_root" --rank "$rank" --nshard "$nshard" "${extra[@]+"${extra[@]}"}" &
  pids+=($!) names+=("bbx_extract $rank/$nshard")
done
# exit 0: every clip done; 3: some clips failed (listed in the failures files), the rest done;
# 1: a shard stopped with an error
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  rc=$?
  if [ $rc -eq 3 ]; then
    echo "shard ${names[$i]}: some clips failed (see failures_*.txt in its output folder)" >&2
    [ $status -eq 0 ] && status=3
  elif [ $rc -ne 0 ]; then
    echo "shard ${names[$i]} did not finish cleanly (exit $rc; see its messages above)" >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "done: audio in $audio_root, face boxes in $bbx_root"
exit $status
