"""Detect the face in every frame of each clip: <bbx_root>/<speaker>/<clip>.npy, (N, 4) int64 x1 y1 x2 y2.

    python -m preparation.bbx_extract --filelist F --video_root V --bbx_root B [--rank 1 --nshard 4]

Frames are streamed. The detector runs on key frames (``--detect_every``) at reduced resolution
(``--detect_max_side``), with the frames between detected too where key frames disagree;
``--detect_every 1 --detect_max_side 0`` detects every frame at full resolution, as the original.
Frames without a detection get boxes interpolated from their neighbours (the original used a
silent 96x96 centre crop); ``--smooth_window`` averages boxes over time.
"""
import argparse
import os

import numpy as np
from face_detection import S3FD_HELP, build_detector
from cli_flags import add_tracking_args, tracking_options
from face_detection.tracking import boxes_for_video
from preparation.runner import add_shard_args, run_shard
from utils.cli import add_device_arg, non_negative_int, positive_int
from utils.device import resolve_device
from utils.errors import run_cli
from utils.fileio import atomic_output, read_filelist


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shard_args(parser)
    parser.add_argument("--bbx_root", required=True, help="output folder for <speaker>/<clip>.npy")
    parser.add_argument("--batch_size", type=positive_int, default=32, help="ignored (key frames are detected in small batches)")
    parser.add_argument("--gpu", type=non_negative_int, default=None,
                        help="GPU index, as the original (default: the shard's rank modulo the GPU count)")
    add_device_arg(parser)
    parser.add_argument("--s3fd_path", default=None, help=S3FD_HELP)
    add_tracking_args(parser, smooth_window=1, dubbing=False)
    return parser.parse_args(argv)


def main(args) -> int:
    read_filelist(args.filelist)            # a bad list fails before the detector loads
    device = resolve_device(args.device if args.gpu is None else str(args.gpu),
                            gpu_hint=max((args.rank or 1) - 1, 0))
    detector = build_detector(args.s3fd_path, device)
    tracking = tracking_options(args, dubbing=False)

    def npy_path(name):
        return os.path.join(args.bbx_root, f"{name}.npy")

    def process(name):
        boxes = boxes_for_video(os.path.join(args.video_root, f"{name}.mp4"), detector, tracking)
        with atomic_output(npy_path(name)) as tmp:
            np.save(tmp, boxes)

    return run_shard(args, "bbx_extract", args.bbx_root, process, lambda n: [npy_path(n)])


if __name__ == "__main__":
    run_cli(main, parse_args())
