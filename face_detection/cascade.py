"""Fallback face detector whose weights ship in the OpenCV wheel (Haar cascade).

Used when no S3FD weights are available. Haar boxes are tight around eyes-to-mouth, while
S3FD boxes reach the chin; the box is extended downwards so the crop holds the whole mouth.
"""
import os
from typing import List, Optional, Tuple

import cv2
import numpy as np

from face_detection.tracking import iou
from utils.errors import TalkLipError

CASCADE_FILE = "haarcascade_frontalface_default.xml"
CONFIRM_FILE = "haarcascade_frontalface_alt2.xml"   # a second, independently trained face cascade
EYE_FILE = "haarcascade_eye.xml"
CONFIRM_PX = 96           # a small face's candidate is confirmed on a copy where its box is this wide
CONFIRM_PAD = 0.25        # ... with this share of its side around it
CHIN_EXTENSION = 0.15     # fraction of the box height added below the Haar box
GRID_SHIFTS = (0, 4, 8, 12)   # pixels: the frame is also searched shifted by these (see detect_faces)
EDGE_PAD = 0.15           # of the frame's longer side: the border a frame without a face found is searched again with


def _on_frame_with_chin(boxes: np.ndarray, shape) -> np.ndarray:
    """Haar boxes (n, 4) as detections (n, 5): clipped to a frame of ``shape``, extended down by CHIN_EXTENSION (to
    the frame's bottom at most), score 1."""
    bottom = np.minimum(shape[0], boxes[:, 3] + (boxes[:, 3] - boxes[:, 1]) * CHIN_EXTENSION)
    return np.column_stack([np.maximum(boxes[:, :2], 0), np.minimum(boxes[:, 2], shape[1]), bottom,
                            np.ones(len(boxes))])


class CascadeDetector:
    """Frontal faces per frame, same interface as :class:`S3FDDetector`."""

    name = "opencv-haar-cascade"

    def __init__(self, min_size: int = 24):
        path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise TalkLipError(f"OpenCV's face cascade {path} is missing: install "
                               f"opencv-python-headless from requirement.txt, or pass --s3fd_path")
        self.min_size = min_size
        self.confirm = self.eyes = None       # loaded by confirm_face, the first time it runs

    def _detect(self, grey: np.ndarray, small: bool = False) -> np.ndarray:
        """Faces of at least an eighth of the frame's shorter side; with ``small``, the smaller ones only (down to
        ``min_size``): the search a frame without a larger face gets."""
        min_side = max(self.min_size, min(grey.shape) // 8)
        low, high = (self.min_size, int(min_side * 1.3) + 1) if small else (min_side, 0)
        if small and low >= high:
            return np.zeros((0, 4))
        faces = self.cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(low, low),
                                              maxSize=(high, high))
        return np.array([(x, y, x + w, y + h) for x, y, w, h in faces], np.float64).reshape(-1, 4)

    def detect_faces(self, frames_bgr: np.ndarray) -> List[np.ndarray]:
        """All faces per frame, largest first: list of (n, 5) [x1, y1, x2, y2, score=1].

        The cascade's boxes jump with its sliding-window grid (a few pixels from frame to frame on a
        steadily moving face); each face box is the mean of the detections on the frame shifted by
        GRID_SHIFTS pixels, which halves that jitter.

        A face that fills the frame (LRS2's face-centred crops, GRID's copies) has its forehead or chin at
        the edge, where no window of the cascade fits around it: a frame without a face is searched again
        inside a border of ``EDGE_PAD`` of its mean grey (on LRS2's clip 00004: 78 of 138 frames instead of
        21), and the boxes clipped to the frame. A frame where neither finds a face of at least an eighth of its
        shorter side is searched for smaller ones, down to ``min_size`` pixels (a face of 200-260 px in a 4K frame,
        33-43 px in the 640-px view the tracker detects on, was missed before)."""
        found = []
        for frame in frames_bgr:
            grey = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
            faces, offset, small = self._detect(grey), 0, False
            if len(faces) == 0:
                pad = int(round(EDGE_PAD * max(grey.shape)))
                padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=int(grey.mean()))
                faces = self._detect(padded)
                if len(faces):
                    grey, offset = padded, pad
                else:
                    faces, small = self._detect(grey, small=True), True
            faces = faces[np.argsort(-(faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1]), kind="stable")]
            sums, counts = faces.copy(), np.ones(len(faces))
            for shift in GRID_SHIFTS[1:]:
                if len(faces) == 0 or min(grey.shape) <= 2 * shift:
                    break
                for box in self._detect(grey[shift:, shift:], small) + shift:
                    overlaps = [iou(box, face) for face in faces]
                    best = int(np.argmax(overlaps))
                    if overlaps[best] > 0.5:
                        sums[best] += box
                        counts[best] += 1
            boxes = sums / counts[:, None] - offset
            found.append(_on_frame_with_chin(boxes, frame.shape))
        return found

    def find_small_faces(self, frame_bgr: np.ndarray, max_px: float, confirm: bool = True) -> np.ndarray:
        """Faces of ``min_size`` to ``max_px`` pixels on a frame searched at its own resolution, each confirmed:
        (n, 5) like ``detect_faces``, largest first.

        For faces too small for the view the tracker detects on (under ~25 px of a 640-px view: under ~150 px in a
        4K frame). A search for small faces over a large frame finds textures too (on scikit-image's coffee picture
        scaled to 4K, a spoon of 155 px and two smaller patches; on 17 pictures without a face, 124 candidates), so
        a candidate is kept only if a second cascade trained apart (``CONFIRM_FILE``, 5 neighbours) finds a face on
        it and the eye cascade an eye in its upper 60%, both on a copy where it is ``CONFIRM_PX`` wide: that kept 1
        of the 124, and 351 of 409 faces of GRID and LRS2 frames placed at 40-120 px in a 4K frame
        (tests/test_face_detection.py). ``confirm=False``: every candidate (the caller confirms those it needs to)."""
        grey = cv2.equalizeHist(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY))
        high = int(max_px)
        if high <= self.min_size:
            return np.zeros((0, 5))
        candidates = self.cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                                   minSize=(self.min_size, self.min_size), maxSize=(high, high))
        kept = [(x, y, x + w, y + h) for x, y, w, h in candidates
                if not confirm or self.confirm_face(frame_bgr, (x, y, x + w, y + h))]
        boxes = np.array(kept, np.float64).reshape(-1, 4)
        boxes = boxes[np.argsort(-(boxes[:, 2] - boxes[:, 0]), kind="stable")]
        return _on_frame_with_chin(boxes, frame_bgr.shape)

    def confirm_face(self, frame_bgr: np.ndarray, box) -> bool:
        """Whether the second face cascade and the eye cascade agree that ``box`` (x1, y1, x2, y2; a box of
        ``find_small_faces`` before its chin extension) holds a face."""
        if self.confirm is None:
            self.confirm = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, CONFIRM_FILE))
            self.eyes = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, EYE_FILE))
        x, y = int(box[0]), int(box[1])
        side = max(1, int(box[2]) - x)
        pad = int(CONFIRM_PAD * side)
        crop = frame_bgr[max(0, y - pad):y + side + pad, max(0, x - pad):x + side + pad]
        scale = CONFIRM_PX / side
        crop = cv2.resize(crop, None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        grey = cv2.equalizeHist(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY))
        if len(self.confirm.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                             minSize=(CONFIRM_PX // 2, CONFIRM_PX // 2))) == 0:
            return False
        upper = grey[:int(grey.shape[0] * 0.6)]
        return len(self.eyes.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=3,
                                              minSize=(CONFIRM_PX // 8, CONFIRM_PX // 8),
                                              maxSize=(CONFIRM_PX // 2, CONFIRM_PX // 2))) > 0

    def detect_batch(self, frames_bgr: np.ndarray) -> List[Optional[Tuple[int, int, int, int]]]:
        """Per frame the largest face as (x1, y1, x2, y2) ints, or None."""
        return [tuple(int(round(v)) for v in dets[0, :4]) if len(dets) else None
                for dets in self.detect_faces(frames_bgr)]
