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
from utils.errors import MediaError, run_cli
from utils.fileio import atomic_output
from utils.video import VideoReader

def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r; 0 when either series is constant (a frozen mouth carries no sync)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) != len(y):
        raise ValueError(f"series differ in length: {len(x)} vs {len(y)}")
    if len(x) < 2 or x.std() < 1e-9 or y.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def load_ground_truth(path: str) -> Dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise MediaError(f"ground truth {path} does not exist: the mouth-sync measure needs a synthetic "
                         f"corpus' gt/<name>.npz (preparation.make_synthetic)")
    with np.load(path) as data:
        if not {"mouth_opening", "face_box", "mouth_center"} <= set(data.files):
            raise MediaError(f"{path} lacks mouth_opening/face_box/mouth_center: not a synthetic-corpus ground truth")
        truth = {k: data[k] for k in ("mouth_opening", "face_box", "mouth_center")}
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


def dub_mouth_sync(video_path: str, face_gt: Mapping[str, np.ndarray], speech_gt: Mapping[str, np.ndarray],
                   fps: Optional[float] = None) -> Dict:
    """A dub of the face clip (ground truth ``face_gt``) driven by the speech clip's audio (``speech_gt``):
    output frame k shows face frame ping_pong(k) and should open as the speech clip's frame at k / fps."""
    with VideoReader(video_path) as reader:
        fps, declared = fps or reader.fps, reader.num_frames
    speech_rows = frame_feature_rows(declared, fps)
    count = int(np.sum(speech_rows < len(speech_gt["mouth_opening"])))   # frames the speech truth covers
    source = ping_pong(declared, len(face_gt["mouth_opening"]))[:count]
    darkness = darkness_series(video_path, face_gt, source)
    opening = speech_gt["mouth_opening"][speech_rows[:count]]
    return {"frames": count, "r": pearson(darkness, opening), "darkness": darkness.tolist(),
            "opening": opening.astype(float).tolist()}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video_root", default=None, help="folder of <name>.mp4 to score (corpus main/ or synthesized)")
    parser.add_argument("--gt_root", default=None, help="the synthetic corpus' gt/ folder of <name>.npz")
    parser.add_argument("--dub", default=None, help="score one dubbed video instead (with --face_gt and --speech_gt)")
    parser.add_argument("--face_gt", default=None, help="gt .npz of the clip whose face was dubbed")
    parser.add_argument("--speech_gt", default=None, help="gt .npz of the clip whose speech drove the dub")
    parser.add_argument("--against_speech", action="store_true",
                        help="with --video_root: score each clip against the opening its speech drives, its own "
                             "shifted by its gt's av_offset_frames (a corpus made with --av_jitter_frames)")
    add_clip_args(parser, filelist_help="text file of sample names (needed with --video_root)")
    args = parser.parse_args(argv)
    if args.dub:
        if not (args.face_gt and args.speech_gt):
            parser.error("--dub needs --face_gt and --speech_gt")
    elif not (args.video_root and args.gt_root and args.filelist):
        parser.error("give --video_root, --gt_root and --filelist (or --dub with --face_gt and --speech_gt)")
    return args


@dataclasses.dataclass
class MouthSyncOptions:
    video_root: str                # <name>.mp4 to score
    gt_root: str                   # the synthetic corpus' gt/<name>.npz
    against_speech: bool = False   # score against the speech's opening (clip_mouth_sync)


def evaluate(opts: MouthSyncOptions, run: ClipRun, names=None) -> Dict:
    """Per-clip r and the r over the frames of all clips ('r'), plus the mean of per-clip r ('r_mean')."""
    def per_clip(name):
        return clip_mouth_sync(f"{opts.video_root}/{name}.mp4", load_ground_truth(f"{opts.gt_root}/{name}.npz"),
                               opts.against_speech)

    def overall(summary):
        rows = summary["per_clip"]
        summary["r_mean"] = summary.pop("r")
        summary["r"] = pearson([d for row in rows for d in row["darkness"]], [o for row in rows for o in row["opening"]])
    return evaluate_clips(run, "mouth_sync", per_clip, opts.video_root, "--video_root", weight="frames", names=names,
                          references=lambda n: [f"{opts.gt_root}/{n}.npz"], summarize=overall,
                          settings={"against_speech": opts.against_speech})


def main(args) -> int:
    if args.dub:
        result = dub_mouth_sync(args.dub, load_ground_truth(args.face_gt), load_ground_truth(args.speech_gt))
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
