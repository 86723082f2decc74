"""Face detection: S3FD with the original weights, or a bundled fallback when they are absent."""
import os
import sys
from typing import Union

import torch

from face_detection.boxes import crop_face
from face_detection.cascade import CascadeDetector
from face_detection.s3fd import S3FD, S3FDDetector
from face_detection.tracking import (DEFAULT_DETECT_EVERY, DEFAULT_DETECT_MAX_SIDE, TrackingOptions,
                                     boxes_for_video, track_faces)

DEFAULT_S3FD_PATH = os.path.join(os.path.dirname(__file__), "detection", "sfd", "s3fd.pth")


def build_detector(s3fd_path: str = DEFAULT_S3FD_PATH, device: Union[str, torch.device] = "cpu",
                   log=None):
    """S3FD when ``s3fd_path`` exists, else the OpenCV cascade; says which detector runs."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if s3fd_path and os.path.isfile(s3fd_path):
        log(f"face detector: S3FD ({s3fd_path}) on {device}")
        return S3FDDetector(s3fd_path, device=device)
    log(f"face detector: OpenCV Haar cascade (no S3FD weights at {s3fd_path}; put s3fd.pth "
        f"there or pass --s3fd_path for the paper's detector)")
    return CascadeDetector()


__all__ = ["S3FD", "S3FDDetector", "CascadeDetector", "build_detector", "crop_face", "TrackingOptions",
           "track_faces", "boxes_for_video", "DEFAULT_DETECT_EVERY",
           "DEFAULT_DETECT_MAX_SIDE", "DEFAULT_S3FD_PATH"]
