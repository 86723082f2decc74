"""Face detection: S3FD with the original weights, or a bundled fallback when they are absent."""
import os
import sys
from typing import Optional, Union

import torch

from face_detection.boxes import crop_face
from utils.errors import CheckpointError
from face_detection.cascade import CascadeDetector
from face_detection.s3fd import S3FD, S3FDDetector
from face_detection.tracking import (DEFAULT_DETECT_EVERY, DEFAULT_DETECT_MAX_SIDE, TrackingOptions,
                                     boxes_for_video, track_faces)

DEFAULT_S3FD_PATH = os.path.join(os.path.dirname(__file__), "detection", "sfd", "s3fd.pth")


S3FD_HELP = ("S3FD weights (the original s3fd.pth); a path that does not exist is an error. Default: "
             "face_detection/detection/sfd/s3fd.pth when it is there, else OpenCV's bundled cascade")


def build_detector(s3fd_path: Optional[str] = None, device: Union[str, torch.device] = "cpu", log=None):
    """S3FD from ``s3fd_path``, which must exist; without one (None), S3FD from ``DEFAULT_S3FD_PATH`` when it
    is there, else the OpenCV cascade. Says which detector runs."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if s3fd_path and not os.path.isfile(s3fd_path):
        raise CheckpointError(f"S3FD weights {s3fd_path} do not exist: check --s3fd_path, or leave it out to use "
                              f"{DEFAULT_S3FD_PATH} when present, else OpenCV's cascade")
    s3fd_path = s3fd_path or DEFAULT_S3FD_PATH
    if os.path.isfile(s3fd_path):
        log(f"face detector: S3FD ({s3fd_path}) on {device}")
        return S3FDDetector(s3fd_path, device=device)
    log(f"face detector: OpenCV Haar cascade (no S3FD weights at {s3fd_path}; put s3fd.pth "
        f"there or pass --s3fd_path for the paper's detector)")
    return CascadeDetector()


__all__ = ["S3FD_HELP", "S3FD", "S3FDDetector", "CascadeDetector", "build_detector", "crop_face", "TrackingOptions",
           "track_faces", "boxes_for_video", "DEFAULT_DETECT_EVERY",
           "DEFAULT_DETECT_MAX_SIDE", "DEFAULT_S3FD_PATH"]
