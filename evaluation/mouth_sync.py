"""Lip sync measured on the synthetic corpus, where the truth is known.

The synthetic corpus (``preparation.make_synthetic``) draws a mouth whose opening follows the speech
(its loudness, or in the readable corpus its phonemes' visemes), and stores the per-frame truth in
``gt/<name>.npz``. This measure reads the opening back from the pixels of a video (the corpus clip
itself, a synthesized test clip, or a dub) as the darkness of a window around the ground-truth mouth
centre (``preparation.mouth_pixels``: the opening, not the width a sound gives the mouth): lips and
the open mouth are darker than skin, and both grow with the opening. Its Pearson r with the
ground-truth opening is the score, per clip and over the frames of all clips. The readable corpus'
ground-truth opening is this same reading of its clean frames (teeth and tongue make a drawn viseme's
darkness differ from its geometric opening), so its videos score 1. The corpus videos score about
0.99; a frozen mouth about 0.

    python -m evaluation.mouth_sync --video_root SYNT --gt_root CORPUS/gt --filelist CORPUS/test.txt [--against_speech]
    python -m evaluation.mouth_sync --dub dubbed.mp4 --face_gt CORPUS/gt/A.npz --speech_gt CORPUS/gt/B.npz

A dub shows the face clip's frames (forward, then backward when the speech is longer) with the
mouth driven by another clip's speech: output frame k is scored at the face clip's mouth position
for the source frame it shows, against the speech clip's opening at the time of frame k.

In a corpus whose mouths run off their speech (``make_synthetic --av_jitter_frames``) a clip's own
opening is ``av_offset_frames`` off what its speech says; ``--against_speech`` scores a video generated
from that speech against the opening the speech drives (frame k against the truth of frame k + offset,
the frames the shift leaves without a partner dropped), not against the clip's own mouth.

Real video (GRID prepared by ``preparation.grid``, whose gt/*.npz has each frame's face box and mouth centre
but no drawn truth): ``--real_root O/main`` reads the same darkness from the real clip as the truth, and
correlates both series after a high-pass (``HIGH_PASS_FRAMES``: each minus its moving average), so that the
shape every GRID sentence shares (a closed mouth, six words, a closed mouth) does not count as sync. On the
50 s1 test clips the real clip against a copy of itself degraded as a generator degrades it (160 -> 96 -> 160
px, Gaussian blur 1.5 px) gives r 0.97 per clip on average (each above 0.92), against another sentence's clip 0.01 (without
the high-pass 0.46); tests/test_grid.py checks both on the shared clips. A dub of GRID clip A with clip B's
speech is scored against B's real video (``--speech_video``). Real video without such a gt (LRS2's clips):
``--bbx_root`` instead of ``--gt_root`` places the mouth by the stored face boxes (``MOUTH_Y`` down each box,
as ``preparation.grid`` frames it).

    python -m evaluation.mouth_sync --video_root SYNT --gt_root O/gt --real_root O/main --filelist O/test.txt
    python -m evaluation.mouth_sync --dub dubbed.mp4 --face_gt O/gt/A.npz --speech_gt O/gt/B.npz --speech_video O/main/B.mp4
"""
import argparse
import dataclasses
import json
import os
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from evaluation.common import ClipRun, add_clip_args, clip_run, evaluate_clips, exit_status, from_args, scored
from preparation.mouth_pixels import mouth_darkness
from utils.timeline import frame_feature_rows, ping_pong
from utils.corpus import load_boxes
from utils.errors import MediaError, run_cli
from utils.fileio import atomic_output
from utils.video import VideoReader

HIGH_PASS_FRAMES = 9      # real video: each series minus its centred moving average over this many frames (0.36 s)


def high_pass(x: Sequence[float], frames: int = HIGH_PASS_FRAMES) -> np.ndarray:
    """``x`` minus its centred moving average over ``frames`` (odd) frames, the ends repeated."""
    x = np.asarray(x, np.float64)
    half = frames // 2
    padded = np.concatenate([np.repeat(x[:1], half), x, np.repeat(x[-1:], half)])
    return x - np.convolve(padded, np.ones(frames) / frames, mode="valid")


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r; 0 when either series is constant (a frozen mouth carries no sync)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) != len(y):
        raise ValueError(f"series differ in length: {len(x)} vs {len(y)}")
    if len(x) < 2 or x.std() < 1e-9 or y.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def load_ground_truth(path: str, real: bool = False) -> Dict[str, np.ndarray]:
    """A gt/<name>.npz: the synthetic corpus' (mouth_opening, face_box, mouth_center), or with ``real`` a prepared
    real clip's (face_box, mouth_center: its opening is read from its video)."""
    if not os.path.isfile(path):
        raise MediaError(f"ground truth {path} does not exist: the mouth-sync measure needs a corpus' gt/<name>.npz "
                         f"(preparation.make_synthetic, or preparation.grid for real video)")
    needed = {"face_box", "mouth_center"} | (set() if real else {"mouth_opening"})
    with np.load(path) as data:
        if not needed <= set(data.files):
            raise MediaError(f"{path} lacks {'/'.join(sorted(needed - set(data.files)))}: not a "
                             + ("prepared clip's gt (preparation.grid)" if real else
                                "synthetic-corpus ground truth (for real video give --real_root / --speech_video)"))
        truth = {k: data[k] for k in needed}
        truth["av_offset_frames"] = int(data["av_offset_frames"]) if "av_offset_frames" in data.files else 0
        return truth


def darkness_series(video_path: str, positions: Mapping[str, np.ndarray], source_index: np.ndarray,
                    exact: bool = False) -> np.ndarray:
    """Darkness of output frame k at the mouth of source frame ``source_index[k]``. Fewer decoded frames
    are an error, and so are more with ``exact`` (else frames beyond ``source_index`` are ignored)."""
    values, decoded = [], 0
    with VideoReader(video_path) as reader:
        for k, frame in enumerate(reader):
            decoded += 1
            if k >= len(source_index):
                if not exact:
                    break
                continue
            s = source_index[k]
            values.append(mouth_darkness(frame, positions["mouth_center"][s], positions["face_box"][s]))
    if len(values) < len(source_index) or (exact and decoded != len(source_index)):
        raise MediaError(f"{video_path} decodes to {decoded} frames, its ground truth has {len(source_index)}: "
                         f"re-synthesize it (a damaged or cut file)")
    return np.array(values)


def clip_mouth_sync(video_path: str, gt: Mapping[str, np.ndarray], against_speech: bool = False) -> Dict:
    """A video frame-aligned with its ground truth (a corpus clip or its synthesized copy); with
    ``against_speech``, against the opening the clip's speech drives (its own shifted by its offset)."""
    opening = gt["mouth_opening"]
    darkness = darkness_series(video_path, gt, np.arange(len(opening)), exact=True)
    shift = int(gt.get("av_offset_frames", 0)) if against_speech else 0
    if shift:                     # the clip's frame k + shift shows what its speech says at frame k
        n = len(opening)
        darkness, opening = darkness[max(0, -shift):n - max(0, shift)], opening[max(0, shift):n + min(0, shift)]
    return {"frames": len(opening), "r": pearson(darkness, opening), "darkness": darkness.tolist(),
            "opening": opening.astype(float).tolist()}


def positions_from_boxes(boxes: np.ndarray) -> Dict[str, np.ndarray]:
    """Face boxes (N, 4) -> the positions a gt holds: the boxes, and the mouth ``MOUTH_Y`` down each box's middle."""
    from preparation.grid import MOUTH_Y
    boxes = np.asarray(boxes, np.float32)
    mouth = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 1] + MOUTH_Y * (boxes[:, 3] - boxes[:, 1])], 1)
    return {"face_box": boxes, "mouth_center": mouth}


def real_clip_mouth_sync(video_path: str, real_path: str, gt: Mapping[str, np.ndarray]) -> Dict:
    """A video frame-aligned with a real clip (its synthesized copy): both read at the clip's mouth, high-passed."""
    frames = len(gt["face_box"])
    darkness = high_pass(darkness_series(video_path, gt, np.arange(frames), exact=True))
    opening = high_pass(darkness_series(real_path, gt, np.arange(frames), exact=True))
    return {"frames": frames, "r": pearson(darkness, opening), "darkness": darkness.tolist(),
            "opening": opening.tolist()}


def dub_mouth_sync(video_path: str, face_gt: Mapping[str, np.ndarray], speech_gt: Mapping[str, np.ndarray],
                   fps: Optional[float] = None, speech_video: Optional[str] = None) -> Dict:
    """A dub of the face clip (ground truth ``face_gt``) driven by the speech clip's audio (``speech_gt``):
    output frame k shows face frame ping_pong(k) and should open as the speech clip's frame at k / fps. With
    ``speech_video`` (real video) the speech clip's opening is read from that video, and both series high-passed."""
    with VideoReader(video_path) as reader:
        fps, declared = fps or reader.fps, reader.num_frames
    speech_rows = frame_feature_rows(declared, fps)
    truth = (darkness_series(speech_video, speech_gt, np.arange(len(speech_gt["face_box"])), exact=True)
             if speech_video else speech_gt["mouth_opening"])
    count = int(np.sum(speech_rows < len(truth)))                       # frames the speech truth covers
    source = ping_pong(declared, len(face_gt["face_box"]))[:count]
    darkness = darkness_series(video_path, face_gt, source)
    opening = np.asarray(truth, np.float64)[speech_rows[:count]]
    if speech_video:
        darkness, opening = high_pass(darkness), high_pass(opening)
    return {"frames": count, "r": pearson(darkness, opening), "darkness": darkness.tolist(),
            "opening": opening.astype(float).tolist()}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video_root", default=None, help="folder of <name>.mp4 to score (corpus main/ or synthesized)")
    parser.add_argument("--gt_root", default=None, help="the synthetic corpus' gt/ folder of <name>.npz")
    parser.add_argument("--dub", default=None, help="score one dubbed video instead (with --face_gt and --speech_gt)")
    parser.add_argument("--face_gt", default=None, help="gt .npz of the clip whose face was dubbed")
    parser.add_argument("--speech_gt", default=None, help="gt .npz of the clip whose speech drove the dub")
    parser.add_argument("--real_root", default=None,
                        help="real video (preparation.grid's main/): the truth is each real clip's opening read from "
                             "its pixels, both series high-passed (--gt_root: that corpus' gt/)")
    parser.add_argument("--bbx_root", default=None,
                        help="with --real_root, for real video without a gt (LRS2): place the mouth by these face boxes")
    parser.add_argument("--speech_video", default=None,
                        help="with --dub on real video: the real video of the speech clip, whose opening is the truth")
    parser.add_argument("--against_speech", action="store_true",
                        help="with --video_root: score each clip against the opening its speech drives, its own "
                             "shifted by its gt's av_offset_frames (a corpus made with --av_jitter_frames)")
    add_clip_args(parser, filelist_help="text file of sample names (needed with --video_root)")
    args = parser.parse_args(argv)
    if args.dub:
        if not (args.face_gt and args.speech_gt):
            parser.error("--dub needs --face_gt and --speech_gt")
    elif not (args.video_root and (args.gt_root or (args.real_root and args.bbx_root)) and args.filelist):
        parser.error("give --video_root, --gt_root (or --real_root with --bbx_root) and --filelist (or --dub with "
                     "--face_gt and --speech_gt)")
    return args


@dataclasses.dataclass
class MouthSyncOptions:
    video_root: str                # <name>.mp4 to score
    gt_root: Optional[str]         # the corpus' gt/<name>.npz (None: real video placed by --bbx_root)
    against_speech: bool = False   # score against the speech's opening (clip_mouth_sync)
    real_root: Optional[str] = None    # real video: the truth is read from <real_root>/<name>.mp4
    bbx_root: Optional[str] = None     # real video without a gt: the mouth placed by these face boxes


def evaluate(opts: MouthSyncOptions, run: ClipRun, names=None) -> Dict:
    """Per-clip r and the r over the frames of all clips ('r'), plus the mean of per-clip r ('r_mean')."""
    def per_clip(name):
        if opts.real_root:
            where = (positions_from_boxes(load_boxes(opts.bbx_root, name)) if opts.bbx_root and not opts.gt_root
                     else load_ground_truth(f"{opts.gt_root}/{name}.npz", real=True))
            return real_clip_mouth_sync(f"{opts.video_root}/{name}.mp4", f"{opts.real_root}/{name}.mp4", where)
        return clip_mouth_sync(f"{opts.video_root}/{name}.mp4", load_ground_truth(f"{opts.gt_root}/{name}.npz"),
                               opts.against_speech)

    def overall(summary):
        rows = summary["per_clip"]
        summary["r_mean"] = summary.pop("r")
        summary["r"] = pearson([d for row in rows for d in row["darkness"]], [o for row in rows for o in row["opening"]])
    return evaluate_clips(run, "mouth_sync", per_clip, opts.video_root, "--video_root", weight="frames", names=names,
                          references=lambda n: ([f"{opts.gt_root}/{n}.npz"] if opts.gt_root else [f"{opts.bbx_root}/{n}.npy"])
                          + ([f"{opts.real_root}/{n}.mp4"] if opts.real_root else []), summarize=overall,
                          settings={"against_speech": opts.against_speech, "real": bool(opts.real_root),
                                    "high_pass": HIGH_PASS_FRAMES if opts.real_root else 0})


def main(args) -> int:
    if args.dub:
        real = bool(args.speech_video)
        result = dub_mouth_sync(args.dub, load_ground_truth(args.face_gt, real), load_ground_truth(args.speech_gt, real),
                                speech_video=args.speech_video)
        print(f"mouth sync r {result['r']:.3f} over {result['frames']} frames of {args.dub}")
        if args.out_json:
            with atomic_output(args.out_json) as tmp, open(tmp, "w") as handle:
                json.dump(result, handle)
        return 0
    run = clip_run(args)
    summary = evaluate(from_args(MouthSyncOptions, args), run)
    for row in summary["per_clip"]:
        print(f"  {row['name']}: r {row['r']:.3f} ({row['frames']} frames)")
    print(f"mouth sync r {summary['r']:.3f} over {summary['frames']} frames of {scored(summary)} "
          f"(mean per clip {summary['r_mean']:.3f})")
    return exit_status([summary], run.allow_missing)


if __name__ == "__main__":
    run_cli(main, parse_args())
