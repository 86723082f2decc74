"""The measures of real mouths checked on real ground truth, before they score anything generated.

    python -m bench.real_measures --data_root data/grid [--clips 50] [--syncnet weights/grid_s1_syncnet.pt]

On a prepared corpus' test split (``preparation.grid``): mouth sync of each real clip against a copy of itself
degraded as a generator degrades it (160 -> 96 -> 160 px, Gaussian blur 1.5 px) and against the next clip's
real video (another sentence; pairs of equal length), and SyncNet's best offset and LSE-C with each clip's own
speech and with the next clip's. Prints one JSON line.
"""
import argparse
import json
import os
import tempfile

import cv2
import numpy as np

from evaluation.mouth_sync import load_ground_truth, real_clip_mouth_sync
from evaluation.sync_eval import clip_sync, load_syncnet
from utils.cli import positive_int
from utils.errors import run_cli
from utils.fileio import read_filelist
from utils.video import VideoReader, VideoWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def degraded_copy(src: str, dst: str) -> None:
    """A real clip degraded as a generator degrades it: 160 -> 96 -> 160 px, Gaussian blur 1.5 px; its sound kept."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with VideoReader(src) as reader:
        width, height = reader.width, reader.height
        with VideoWriter(dst, reader.fps, width, height, audio_path=src) as writer:
            for frame in reader:
                small = cv2.resize(frame, (96, 96), interpolation=cv2.INTER_AREA)
                writer.write(cv2.GaussianBlur(cv2.resize(small, (width, height)), (0, 0), 1.5))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", required=True, help="a prepared corpus (main/, gt/, test.txt)")
    parser.add_argument("--clips", type=positive_int, default=50, help="the first N test clips")
    parser.add_argument("--syncnet", default=os.path.join(ROOT, "weights", "grid_s1_syncnet.pt"),
                        help="the corpus' SyncNet (train_syncnet.py)")
    return parser.parse_args(argv)


def main(args) -> int:
    names = read_filelist(os.path.join(args.data_root, "test.txt"))[:args.clips]
    real = lambda n: os.path.join(args.data_root, "main", f"{n}.mp4")
    truth = {n: load_ground_truth(os.path.join(args.data_root, "gt", f"{n}.npz"), real=True) for n in names}
    own, other = [], []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            copy = os.path.join(folder, f"{name}.mp4")
            degraded_copy(real(name), copy)
            own.append(real_clip_mouth_sync(copy, real(name), truth[name])["r"])
    for a, b in zip(names, names[1:] + names[:1]):
        if len(truth[a]["face_box"]) == len(truth[b]["face_box"]):
            other.append(real_clip_mouth_sync(real(a), real(b), truth[b])["r"])
    syncnet = load_syncnet(args.syncnet)
    scores = [(clip_sync(real(a), syncnet, 15, 20), clip_sync(real(a), syncnet, 15, 20, audio_path=real(b)))
              for a, b in zip(names, names[1:] + names[:1])]
    lse_own, lse_other = float(np.mean([s["lse_c"] for s, _ in scores])), float(np.mean([o["lse_c"] for _, o in scores]))
    print(json.dumps({
        "data_root": args.data_root, "clips": len(names),
        "mouth_sync_degraded": {"mean": float(np.mean(own)), "min": float(np.min(own))},
        "mouth_sync_other_sentence": {"mean": float(np.mean(other)), "pairs": len(other)},
        "syncnet": {"model": args.syncnet, "offset_within_1": float(np.mean([abs(s["offset"]) <= 1 for s, _ in scores])),
                    "lse_c_own": lse_own, "lse_c_other": lse_other, "ratio": lse_own / lse_other,
                    "lse_d_own": float(np.mean([s["lse_d"] for s, _ in scores]))}}))
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
