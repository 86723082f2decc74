"""How open a drawn mouth looks, read from the pixels: the one reading shared by the synthetic corpus
(the readable corpus stores it as its ground-truth opening) and the mouth-sync measure
(evaluation/mouth_sync.py), so the corpus' own videos are what the measure calls perfect sync.

The reading is the darkness of a window at the mouth centre, sized by the face box: lips and the open
mouth are darker than skin, and grow with the opening. A wide-open neutral mouth reads about
``OPEN_DARKNESS``.
"""
from typing import Sequence

import cv2
import numpy as np

from utils.errors import MediaError

DARK_LEVEL = 120.0          # grey level: skin is brighter, lips (~105) and the open mouth (~25) darker
WINDOW_HALF_WIDTH = 0.10   # of the face box width: inside the narrowest open mouth's interior
WINDOW_HALF_HEIGHT = 0.15  # of the face box height: an open mouth is ~0.19 of it
OPEN_DARKNESS = 54.0       # the reading of a wide-open mouth (the readable corpus' opening 1.0, drawn 1.3x)


def mouth_darkness(frame: np.ndarray, center: Sequence[float], face_box: Sequence[float]) -> float:
    """Mean of max(0, DARK_LEVEL - grey) over a window at ``center`` sized by ``face_box``;
    frame (H, W, 3) uint8 BGR, center (x, y) and face_box (x1, y1, x2, y2) in its pixels."""
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
    rx = int(round(WINDOW_HALF_WIDTH * (face_box[2] - face_box[0])))
    ry = int(round(WINDOW_HALF_HEIGHT * (face_box[3] - face_box[1])))
    cx, cy = (int(round(v)) for v in center)
    window = grey[max(0, cy - ry):cy + ry + 1, max(0, cx - rx):cx + rx + 1]
    if window.size == 0:
        raise MediaError(f"the mouth window at {cx},{cy} lies outside the {frame.shape[1]}x{frame.shape[0]} frame")
    return float(np.maximum(0.0, DARK_LEVEL - window).mean())
