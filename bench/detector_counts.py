"""How many frames of each clip a face detector finds a face on, every frame at its own size.

    python -m bench.detector_counts --videos '../shared/data/lrs2_samples/main/demo/*.mp4' [--s3fd_path s3fd.pth]

Prints one JSON line: per clip (file name) the frames with a face and the frames in all, for OpenCV's cascade and,
given its weights, S3FD. What docs/preprocessing.md reports on LRS2's five clips and GRID's copies.
"""
import argparse
import glob
import json
import os

import numpy as np

from face_detection import CascadeDetector, S3FDDetector
from utils.video import VideoReader


def counts(detector, paths):
    out = {}
    for path in paths:
        found, total = 0, 0
        with VideoReader(path) as reader:
            for frame in reader:
                found += len(detector.detect_faces(np.stack([frame]))[0]) > 0
                total += 1
        out[os.path.basename(path)] = [found, total]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", required=True, help="a glob of video files (quote it)")
    parser.add_argument("--s3fd_path", default=None, help="S3FD weights: also count with S3FD")
    args = parser.parse_args()
    paths = sorted(glob.glob(args.videos))
    if not paths:
        raise SystemExit(f"no video matches {args.videos}")
    result = {"bench": "detector_counts", "videos": args.videos, "cascade": counts(CascadeDetector(), paths)}
    if args.s3fd_path:
        result["s3fd"] = counts(S3FDDetector(args.s3fd_path, "cpu"), paths)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
