"""Cropping a face box out of a frame (the boxes themselves come from face_detection.tracking)."""
from typing import Sequence

import cv2
import numpy as np


def crop_face(frame: np.ndarray, box: Sequence[int], size: int = 96) -> np.ndarray:
    """Resize the box region of one (H, W, 3) frame to (size, size, 3), box clipped to the frame."""
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box)
    x1, x2 = np.clip([x1, x2], 0, width)
    y1, y2 = np.clip([y1, y2], 0, height)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"face box {tuple(box)} lies outside the {width}x{height} frame")
    return cv2.resize(frame[y1:y2, x1:x2], (size, size))
