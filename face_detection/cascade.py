"""Fallback face detector whose weights ship in the OpenCV wheel (Haar cascade).

Used when no S3FD weights are available. Haar boxes are tight around eyes-to-mouth, while
S3FD boxes reach the chin; the box is extended downwards so the crop holds the whole mouth.
"""
import os
from typing import List, Optional, Tuple

import cv2
import numpy as np

from utils.errors import TalkLipError

CASCADE_FILE = "haarcascade_frontalface_default.xml"
CHIN_EXTENSION = 0.15     # fraction of the box height added below the Haar box


class CascadeDetector:
    """Largest frontal face per frame, same interface as :class:`S3FDDetector`."""

    name = "opencv-haar-cascade"

    def __init__(self, min_size: int = 24):
        path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise TalkLipError(f"OpenCV's face cascade {path} is missing: install "
                               f"opencv-python-headless from requirement.txt, or pass --s3fd_path")
        self.min_size = min_size

    def detect_batch(self, frames_bgr: np.ndarray) -> List[Optional[Tuple[int, int, int, int]]]:
        boxes = []
        for frame in frames_bgr:
            grey = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
            min_side = max(self.min_size, min(grey.shape) // 8)
            faces = self.cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                                  minSize=(min_side, min_side))
            if len(faces) == 0:
                boxes.append(None)
                continue
            x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
            y2 = min(frame.shape[0], int(round(y + h * (1 + CHIN_EXTENSION))))
            boxes.append((int(x), int(y), int(x + w), y2))
        return boxes
