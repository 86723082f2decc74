"""GRID (Cooke et al. 2006, CC BY 4.0) as an LRS2-layout corpus: one command from a local GRID folder.

    python -m preparation.grid --grid_root G --out_dir O [--speakers s1,s2] [--nshard 2] [--s3fd_path P]

G holds GRID as it is distributed: speaker folders of videos (``G/s1/bbaf2n.mpg``, at any depth below
the speaker folder; .mpg or any format ffmpeg reads) and word alignments ``G/alignments/s1/bbaf2n.align``
(``start end word`` lines in 1/25000 s, with ``sil`` / ``sp``). O receives what the rest of the project
reads from the synthetic corpus and LRS2:

- ``O/main/<spk>/<id>.mp4``: a face-centred 160 x 160 copy of each clip at 25 fps with its own sound, framed
  so that the mouth sits at the frame centre at LRS2's face scale (see ``framing``): the central 96 x 96
  every reader and TalkLip's expert take is then a mouth-centred ROI, as AV-HuBERT reads; the face detector
  finds the face in it as in an LRS2 frame;
- ``O/main/<spk>/<id>.txt``: the transcript as LRS2's ``Text:`` line (upper case, ``sil``/``sp`` dropped);
- ``O/gt/<spk>/<id>.npz``: the word timings (``words``, ``word_start_s``, ``word_end_s``), each frame's
  window in the source video (``window``: centre x, centre y, side) and the source's size, and each copy
  frame's face box and mouth centre (``face_box``, ``mouth_center``) for the mouth-sync measure;
- ``O/audio`` (16 kHz mono WAVs) and ``O/bbx`` (face boxes of the copies): preprocess.sh, in shards;
- ``O/bbx/face_framing.json``: how the copies' boxes crop the face against the box the detector finds in GRID's
  own video (``face_detection.framing``): train.py records it in the generator, and a dub frames faces by it;
- file lists ``O/filelist.txt`` (every clip prepared), ``train.txt``, ``valid.txt``, ``test.txt``:
  ``SPLIT_DOC``.

Every step writes through a temporary and skips finished clips, so a rerun resumes. A clip with bad input
(a video without its alignment or the reverse, an alignment longer than its video or with a word outside
GRID's grammar, a video that does not decode) is left out with one line naming the file and the fix, and
listed in ``O/failures_grid.txt``; the rest is prepared (exit 3 then, as preprocess.sh). A speaker folder
without clips is named and skipped; no clip at all is an error.
"""
import argparse
import concurrent.futures
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from utils.cli import positive_int
from utils.errors import MediaError, TalkLipError, one_line, run_cli
from utils.fileio import atomic_output

# GRID's grammar: command, colour, preposition, letter (no w), digit, adverb; 51 words
GRAMMAR: Tuple[Tuple[str, ...], ...] = (
    ("BIN", "LAY", "PLACE", "SET"),
    ("BLUE", "GREEN", "RED", "WHITE"),
    ("AT", "BY", "IN", "WITH"),
    tuple("ABCDEFGHIJKLMNOPQRSTUVXYZ"),
    ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"),
    ("AGAIN", "NOW", "PLEASE", "SOON"),
)
WORDS = frozenset(w for slot in GRAMMAR for w in slot)
PAUSES = ("SIL", "SP")                       # alignment tokens that are not words
ALIGN_UNITS_PER_S = 25000.0
FPS = 25.0
VIDEO_EXTENSIONS = (".mpg", ".mpeg", ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

FRAME_SIZE = 160           # LRS2's frames
FRAME_SCALE = 1.25         # the copy's side, x the face box width: the face fills the frame, as in LRS2
MOUTH_Y = 0.71             # the mouth centre, as a share of the face box height from its top (measured on s1)
SMOOTH_FRAMES = 5          # the window's centre is a moving average over this many frames

SPLIT_BUCKETS = 18         # one bucket of 18 is test, one valid, the rest train: ~50 / 50 / 800 of 900
SPLIT_SALT = "460:"        # the first salt that splits the 900 s1 sentences GRID's shared copy holds 800 / 50 / 50
SPLIT_DOC = ("split by sentence: a sentence (its words, upper case, one space apart) goes to test when the SHA-1 of "
             f"'{SPLIT_SALT}' and its words, read as a number, is 0 modulo {SPLIT_BUCKETS}, to valid when 1, else to train "
             "(1/18 each in expectation; s1's 900 sentences here split 800 / 50 / 50); the same sentence of every "
             "speaker lands in the same part, and a sentence's part never depends on which other clips are present")
MIN_STEADY_SHARE = 0.8    # the damage check: this share of a clip's face boxes must overlap its median box


VOCABULARY: Tuple[str, ...] = tuple(w for slot in GRAMMAR for w in slot)   # frame label k + 1 is word k; 0 a pause


def frame_word_ids(words: Sequence[str], start_s: Sequence[float], end_s: Sequence[float], frames: int,
                   fps: float = FPS) -> np.ndarray:
    """(frames,) int64: each frame's word (1 + its index in ``VOCABULARY``) at the frame's centre, 0 in a pause."""
    ids = np.zeros(frames, np.int64)
    centres = (np.arange(frames) + 0.5) / fps
    for word, start, end in zip(words, start_s, end_s):
        ids[(centres >= start) & (centres < end)] = 1 + VOCABULARY.index(str(word).upper())
    return ids


def split_of(words: Sequence[str]) -> str:
    """'train', 'valid' or 'test' for a sentence (``SPLIT_DOC``)."""
    text = SPLIT_SALT + " ".join(str(w).upper() for w in words)
    digest = int(hashlib.sha1(text.encode()).hexdigest(), 16) % SPLIT_BUCKETS
    return {0: "test", 1: "valid"}.get(digest, "train")


@dataclass(frozen=True)
class Alignment:
    words: Tuple[str, ...]          # the sentence, upper case, pauses dropped
    start_s: Tuple[float, ...]
    end_s: Tuple[float, ...]
    last_s: float                   # where the alignment ends (its last token, pauses included)


def read_alignment(path: str) -> Alignment:
    """A GRID ``.align`` file; bad lines and words outside the grammar raise one line naming the file."""
    words, starts, ends, last = [], [], [], 0.0
    try:
        with open(path, encoding="utf-8-sig", errors="strict") as handle:
            lines = [line.split() for line in handle if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise MediaError(f"alignment {path} cannot be read as text ({type(err).__name__}): replace it with GRID's "
                         f".align file") from None
    for number, parts in enumerate(lines, 1):
        if len(parts) != 3:
            raise MediaError(f"alignment {path}, line {number}: expected 'start end word', got {' '.join(parts)!r}: "
                             f"replace it with GRID's .align file")
        try:
            start, end = float(parts[0]) / ALIGN_UNITS_PER_S, float(parts[1]) / ALIGN_UNITS_PER_S
        except ValueError:
            raise MediaError(f"alignment {path}, line {number}: times {parts[0]!r} {parts[1]!r} are not numbers: "
                             f"replace it with GRID's .align file") from None
        if not (0 <= start <= end) or not np.isfinite(end):
            raise MediaError(f"alignment {path}, line {number}: the word ends before it starts ({parts[0]} {parts[1]}): "
                             f"replace it with GRID's .align file")
        word = parts[2].upper()
        last = max(last, end)
        if word in PAUSES:
            continue
        if word not in WORDS:
            raise MediaError(f"alignment {path}, line {number}: {parts[2]!r} is not a word of GRID's grammar "
                             f"(51 words: bin lay place set, blue green red white, at by in with, a-z without w, "
                             f"zero-nine, again now please soon): fix the word or leave the clip out")
        words.append(word)
        starts.append(start)
        ends.append(end)
    if not words:
        raise MediaError(f"alignment {path} holds no word: replace it with GRID's .align file")
    return Alignment(tuple(words), tuple(starts), tuple(ends), last)


@dataclass(frozen=True)
class Clip:
    name: str            # <speaker>/<id>
    video: str
    align: str


def _speaker_videos(folder: str) -> Dict[str, str]:
    """{id: video path} under a speaker folder, at any depth; .mpg first when an id has several files."""
    found: Dict[str, str] = {}
    for sub, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for file in sorted(files):
            stem, ext = os.path.splitext(file)
            if ext.lower() in VIDEO_EXTENSIONS and not file.startswith("."):
                path = os.path.join(sub, file)
                previous = found.get(stem)
                if previous is None or VIDEO_EXTENSIONS.index(ext.lower()) < \
                        VIDEO_EXTENSIONS.index(os.path.splitext(previous)[1].lower()):
                    found[stem] = path
    return found


def scan(grid_root: str, speakers: Optional[Sequence[str]] = None, log=print) -> Tuple[List[Clip], List[Tuple[str, str]]]:
    """The clips of a GRID folder with both a video and an alignment, and the problems (name, one line) of the
    rest. A speaker folder without videos is named in a line and skipped; none with a clip is an error."""
    if not os.path.isdir(grid_root):
        raise TalkLipError(f"GRID folder {grid_root} does not exist: pass --grid_root, the folder holding s1/, s2/, ... "
                           f"and alignments/")
    align_root = os.path.join(grid_root, "alignments")
    if not os.path.isdir(align_root):
        raise TalkLipError(f"{grid_root} has no alignments/ folder: put GRID's word alignments there as "
                           f"alignments/<speaker>/<id>.align")
    present = sorted(d for d in os.listdir(grid_root)
                     if d != "alignments" and not d.startswith(".") and os.path.isdir(os.path.join(grid_root, d)))
    if speakers:
        missing = [s for s in speakers if s not in present]
        if missing:
            raise TalkLipError(f"--speakers {','.join(missing)}: no such folder in {grid_root} (it has "
                               f"{', '.join(present[:8]) or 'none'}{', ...' if len(present) > 8 else ''})")
        present = list(speakers)
    clips, problems = [], []
    for speaker in present:
        videos = _speaker_videos(os.path.join(grid_root, speaker))
        align_dir = os.path.join(align_root, speaker)
        aligns = {os.path.splitext(f)[0]: os.path.join(align_dir, f) for f in sorted(os.listdir(align_dir))
                  if f.endswith(".align")} if os.path.isdir(align_dir) else {}
        if not videos:
            log(f"warning: speaker folder {os.path.join(grid_root, speaker)} holds no video ({', '.join(VIDEO_EXTENSIONS)}): "
                f"skipped; unpack its videos there or leave it out with --speakers")
            continue
        for ident in sorted(set(videos) | set(aligns)):
            name = f"{speaker}/{ident}"
            if any(ch.isspace() for ch in ident):
                problems.append((name, f"{videos.get(ident) or aligns[ident]} has white space in its name, which file "
                                       f"lists cannot hold: rename it"))
            elif ident not in aligns:
                problems.append((name, f"video {videos[ident]} has no alignment {os.path.join(align_dir, ident)}.align: "
                                       f"add GRID's alignment for it or remove the video"))
            elif ident not in videos:
                problems.append((name, f"alignment {aligns[ident]} has no video in {os.path.join(grid_root, speaker)}: "
                                       f"add the clip's video or remove the alignment"))
            else:
                try:
                    read_alignment(aligns[ident])          # its words, before any video is decoded
                except MediaError as err:
                    problems.append((name, str(err)))
                    continue
                clips.append(Clip(name, videos[ident], aligns[ident]))
    if not clips:
        raise TalkLipError(f"no clip of {grid_root} has both a video and an alignment"
                           + (f" ({problems[0][1]})" if problems else "") + ": check --grid_root")
    return clips, problems


# --- framing: a face-centred copy with the mouth at the frame centre ---

def framing(boxes: np.ndarray) -> np.ndarray:
    """(N, 3) windows (centre x, centre y, side) in the source video from its (N, 4) face boxes: the side is
    ``FRAME_SCALE`` x the clip's median box width, the centre the mouth (``MOUTH_Y`` down the box), averaged
    over ``SMOOTH_FRAMES`` frames so that the copy does not shake with the detector's jitter."""
    boxes = np.asarray(boxes, np.float64)
    width = float(np.median(boxes[:, 2] - boxes[:, 0]))
    centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 1] + MOUTH_Y * (boxes[:, 3] - boxes[:, 1])], 1)
    half = SMOOTH_FRAMES // 2
    padded = np.concatenate([np.repeat(centre[:1], half, 0), centre, np.repeat(centre[-1:], half, 0)])
    kernel = np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES
    smooth = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(2)], 1)
    return np.concatenate([smooth, np.full((len(boxes), 1), FRAME_SCALE * width)], 1)


def window_affine(window: Sequence[float], size: int = FRAME_SIZE) -> np.ndarray:
    """The 2 x 3 affine map from source pixels to the copy's for one window (centre x, centre y, side)."""
    cx, cy, side = (float(v) for v in window)
    scale = size / side
    return np.array([[scale, 0.0, size / 2 - scale * cx], [0.0, scale, size / 2 - scale * cy]])


def frame_copy(frame: np.ndarray, window: Sequence[float], size: int = FRAME_SIZE) -> np.ndarray:
    """The copy's frame: the window of ``frame`` resized to ``size`` (edges past the source repeated)."""
    import cv2
    return cv2.warpAffine(frame, window_affine(window, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def map_boxes(boxes: np.ndarray, windows: np.ndarray, size: int = FRAME_SIZE) -> np.ndarray:
    """Source face boxes mapped into the copies' pixels (each frame by its own window)."""
    out = np.empty((len(boxes), 4), np.float32)
    for i, (box, window) in enumerate(zip(np.asarray(boxes, np.float64), windows)):
        m = window_affine(window, size)
        out[i] = [m[0, 0] * box[0] + m[0, 2], m[1, 1] * box[1] + m[1, 2], m[0, 0] * box[2] + m[0, 2],
                  m[1, 1] * box[3] + m[1, 2]]
    return out


def check_face_steady(video: str, boxes: np.ndarray) -> None:
    """One line (MediaError) when fewer than ``MIN_STEADY_SHARE`` of the face boxes overlap the clip's median box
    (IoU above 0.5): GRID's speaker sits still, so a track that wanders is a picture damaged throughout (GRID s1's
    pbio7a shows blocks of grey and a smeared face for half its frames), which no framing mends. A few damaged
    frames (a broken macroblock) pass."""
    from face_detection.tracking import iou
    median = np.median(boxes, 0)
    steady = sum(iou(box, median) > 0.5 for box in boxes)
    if steady < MIN_STEADY_SHARE * len(boxes):
        raise MediaError(f"the face box of {video} stays in place on only {steady} of its {len(boxes)} frames: its "
                         f"picture is damaged (or shows no steady frontal face); replace it from GRID's distribution, "
                         f"or leave it out")


_DETECTOR = None


def _worker_setup(s3fd_path: Optional[str]) -> None:
    import torch
    torch.set_num_threads(1)
    global _DETECTOR
    from face_detection import build_detector
    _DETECTOR = build_detector(s3fd_path, "cpu", log=lambda msg: None)


def prepare_clip(clip: Clip, out_dir: str, detector=None) -> str:
    """Frame one clip into ``out_dir``: the copy, its transcript and its gt; returns the clip's name. Raises
    one line (MediaError) for an alignment longer than the video or a video that does not decode."""
    from face_detection import TrackingOptions, boxes_for_video
    from utils.video import VideoReader, VideoWriter
    detector = detector or _DETECTOR
    align = read_alignment(clip.align)
    with VideoReader(clip.video) as reader:
        fps, width, height = reader.fps, reader.width, reader.height
    if abs(fps - FPS) > 0.01:
        raise MediaError(f"{clip.video} runs at {fps:g} fps; GRID and the models use 25 fps: re-encode it at 25 fps")
    boxes = boxes_for_video(clip.video, detector, TrackingOptions(smooth_window=1, max_gap_s=None))
    duration = len(boxes) / FPS
    if align.last_s > duration + 1.0 / FPS:
        raise MediaError(f"alignment {clip.align} runs to {align.last_s:.2f} s, past the {duration:.2f} s "
                         f"({len(boxes)} frames) of {clip.video}: the video is cut short or the alignment is another "
                         f"clip's; replace whichever is wrong")
    check_face_steady(clip.video, boxes)
    windows = framing(boxes)
    video_out = os.path.join(out_dir, "main", f"{clip.name}.mp4")
    with VideoReader(clip.video) as reader, VideoWriter(video_out, FPS, FRAME_SIZE, FRAME_SIZE,
                                                        audio_path=clip.video, crf=18) as writer:
        count = 0
        for frame in reader:
            if count < len(windows):
                writer.write(frame_copy(frame, windows[count]))
            count += 1
        if count != len(windows):
            raise MediaError(f"{clip.video} decoded to {count} frames, then {len(windows)}: a damaged file; "
                             f"re-encode it")
    with atomic_output(os.path.join(out_dir, "main", f"{clip.name}.txt")) as tmp, open(tmp, "w") as handle:
        handle.write(f"Text:  {' '.join(align.words)}\n")
    mouth = np.full((len(windows), 2), FRAME_SIZE / 2, np.float32)
    with atomic_output(os.path.join(out_dir, "gt", f"{clip.name}.npz")) as tmp:
        np.savez(tmp, words=np.array(align.words), word_start_s=np.array(align.start_s, np.float32),
                 word_end_s=np.array(align.end_s, np.float32), window=windows.astype(np.float32),
                 source_size=np.array([width, height]), face_box=map_boxes(boxes, windows), mouth_center=mouth,
                 source=os.path.abspath(clip.video))
    return clip.name


def _prepare_in_worker(clip: Clip, out_dir: str) -> str:
    return prepare_clip(clip, out_dir)


def clip_outputs(out_dir: str, name: str) -> List[str]:
    return [os.path.join(out_dir, "main", f"{name}.mp4"), os.path.join(out_dir, "main", f"{name}.txt"),
            os.path.join(out_dir, "gt", f"{name}.npz")]


def prepare_copies(clips: Sequence[Clip], out_dir: str, workers: int, s3fd_path: Optional[str], overwrite: bool,
                   progress: bool = True) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Frame every clip (``workers`` processes); finished clips are skipped. -> (done names, failures)."""
    from tqdm import tqdm
    todo = [c for c in clips if overwrite or not all(os.path.isfile(p) for p in clip_outputs(out_dir, c.name))]
    done = [c.name for c in clips if c not in todo]
    failed: List[Tuple[str, str]] = []
    if todo:
        print(f"framing {len(todo)} clips ({len(done)} already done) in {workers} processes", file=sys.stderr)
    bar = tqdm(total=len(todo), desc="frame GRID clips", unit="clip", file=sys.stderr, disable=not progress or None)
    with concurrent.futures.ProcessPoolExecutor(max(1, workers), initializer=_worker_setup,
                                                initargs=(s3fd_path,)) as pool:
        futures = {pool.submit(_prepare_in_worker, clip, out_dir): clip for clip in todo}
        try:
            for future in concurrent.futures.as_completed(futures):
                clip = futures[future]
                try:
                    done.append(future.result())
                except Exception as exc:          # one bad clip must not stop the others
                    failed.append((clip.name, one_line(exc)))
                    print(f"failed: {clip.name}: {one_line(exc)}", file=sys.stderr)
                bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    bar.close()
    return done, failed


def fewer_train(clips: Sequence[Clip], per_speaker: int) -> List[Clip]:
    """Every valid and test clip, and each speaker's first ``per_speaker`` train clips (in id order)."""
    kept, train_count = [], {}
    for clip in clips:
        speaker = clip.name.split("/")[0]
        if split_of(read_alignment(clip.align).words) == "train":
            if train_count.get(speaker, 0) >= per_speaker:
                continue
            train_count[speaker] = train_count.get(speaker, 0) + 1
        kept.append(clip)
    return kept


def write_list(path: str, names: Sequence[str]) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(f"{n}\n" for n in names)


def transcript_words(out_dir: str, name: str) -> List[str]:
    from utils.corpus import read_transcript
    return read_transcript(os.path.join(out_dir, "main"), name).split()


def preprocess(out_dir: str, names: Sequence[str], nshard: int, s3fd_path: Optional[str]) -> int:
    """preprocess.sh over the copies (16 kHz mono WAVs in O/audio, face boxes in O/bbx): its exit status."""
    listing = os.path.join(out_dir, "prepared.txt")
    write_list(listing, names)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = ["bash", os.path.join(root, "preprocess.sh"), "--filelist", listing, "--video_root",
           os.path.join(out_dir, "main"), "--audio_root", os.path.join(out_dir, "audio"), "--bbx_root",
           os.path.join(out_dir, "bbx"), "--nshard", str(nshard)]
    if s3fd_path:
        cmd += ["--s3fd_path", s3fd_path]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHON": sys.executable})
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()              # preprocess.sh stops its shards on SIGTERM and waits for them
        proc.wait()
        raise


def record_framing(out_dir: str, names: Sequence[str], detector: str) -> str:
    """``O/bbx/face_framing.json`` (face_detection.framing): how the copies' boxes, which TalkLip trains on, crop
    the face that the detector boxes in GRID's own video (each copy frame's source box, mapped into the copy)."""
    from face_detection.framing import measure_framing, write_framing

    def pairs():
        for name in names:
            with np.load(os.path.join(out_dir, "gt", f"{name}.npz")) as gt:
                source_boxes = gt["face_box"]
            yield source_boxes, np.load(os.path.join(out_dir, "bbx", f"{name}.npy"))
    framing, frames = measure_framing(*zip(*pairs()))
    return write_framing(os.path.join(out_dir, "bbx"), framing, detector, frames,
                         f"GRID's copies' face boxes as fractions of the box the detector finds in the source video, "
                         f"median over {len(names)} clips")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid_root", required=True, help="GRID folder: <speaker>/ video folders and alignments/")
    parser.add_argument("--out_dir", required=True, help="where the LRS2-layout corpus goes")
    parser.add_argument("--speakers", default="", help="comma-separated speaker folders to prepare (default: all)")
    parser.add_argument("--nshard", type=positive_int, default=2, help="processes for framing and preprocessing")
    parser.add_argument("--s3fd_path", default=None,
                        help="S3FD weights (s3fd.pth) for the face boxes; without them OpenCV's cascade is used")
    parser.add_argument("--max_train", type=positive_int, default=None,
                        help="prepare only the first N train sentences of each speaker (by id) and every valid and "
                             "test one: a short run's corpus (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="redo clips whose outputs exist")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    return parser.parse_args(argv)


def main(args) -> int:
    if args.s3fd_path and not os.path.isfile(args.s3fd_path):
        raise TalkLipError(f"--s3fd_path {args.s3fd_path} does not exist: give the S3FD weights file, or leave the "
                           f"flag out to use OpenCV's cascade")
    started = time.time()
    speakers = [s for s in args.speakers.split(",") if s] or None
    clips, problems = scan(args.grid_root, speakers, log=lambda m: print(m, file=sys.stderr))
    for name, reason in problems:
        print(f"left out: {name}: {reason}", file=sys.stderr)
    if args.max_train:
        clips = fewer_train(clips, args.max_train)
    os.makedirs(args.out_dir, exist_ok=True)
    done, failed = prepare_copies(clips, args.out_dir, args.nshard, args.s3fd_path, args.overwrite,
                                  progress=not args.no_progress)
    failed = problems + failed
    order = {c.name: i for i, c in enumerate(clips)}
    done = sorted(done, key=order.get)
    status = 0
    if done:
        status = preprocess(args.out_dir, done, args.nshard, args.s3fd_path)
    ready = [n for n in done if os.path.isfile(os.path.join(args.out_dir, "audio", f"{n}.wav"))
             and os.path.isfile(os.path.join(args.out_dir, "bbx", f"{n}.npy"))]
    failed += [(n, "preprocessing failed (see preprocess.sh's failures files in audio/ and bbx/)")
               for n in done if n not in ready]
    if ready:
        from face_detection import CascadeDetector, S3FDDetector
        record_framing(args.out_dir, ready, (S3FDDetector if args.s3fd_path else CascadeDetector).name)
    parts: Dict[str, List[str]] = {"train": [], "valid": [], "test": []}
    for name in ready:
        parts[split_of(transcript_words(args.out_dir, name))].append(name)
    write_list(os.path.join(args.out_dir, "filelist.txt"), ready)
    for part, names in parts.items():
        write_list(os.path.join(args.out_dir, f"{part}.txt"), names)
    with atomic_output(os.path.join(args.out_dir, "SPLIT.txt")) as tmp, open(tmp, "w") as handle:
        handle.write(f"GRID (Cooke et al. 2006, CC BY 4.0) prepared by python -m preparation.grid from {args.grid_root}.\n"
                     f"{SPLIT_DOC}.\n")
    failures = os.path.join(args.out_dir, "failures_grid.txt")
    if failed:
        with atomic_output(failures) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(f"{name}\t{reason}\n" for name, reason in failed)
    elif os.path.exists(failures):
        os.remove(failures)
    print(f"GRID prepared in {args.out_dir}: {len(ready)} clips (train {len(parts['train'])}, valid "
          f"{len(parts['valid'])}, test {len(parts['test'])}), {len(failed)} left out"
          + (f" (listed in {failures})" if failed else "") + f", {time.time() - started:.0f} s", file=sys.stderr)
    return 3 if failed or status else 0


if __name__ == "__main__":
    run_cli(main, parse_args())
