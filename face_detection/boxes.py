"""Per-frame face boxes: filling frames without a detection, smoothing, and cropping."""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from utils.errors import NoFaceError

Box = Tuple[int, int, int, int]


def fill_missing_boxes(boxes: Sequence[Optional[Box]], source: str = "video") -> np.ndarray:
    """(N, 4) int64 boxes where frames without a face (None) get boxes interpolated linearly
    from the nearest detected frames on each side (the nearest one at the ends)."""
    found = np.array([b is not None for b in boxes])
    if not found.any():
        raise NoFaceError(f"no face found in any frame of {source}: check the video shows a "
                          f"frontal face, or use the S3FD detector (--s3fd_path)")
    known = np.flatnonzero(found)
    coords = np.array([boxes[i] for i in known], dtype=np.float64)
    frames = np.arange(len(boxes))
    filled = np.stack([np.interp(frames, known, coords[:, k]) for k in range(4)], axis=1)
    return np.round(filled).astype(np.int64)


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of (N, 4) boxes over ``window`` frames (edges replicated)."""
    if window <= 1 or len(boxes) < 2:
        return np.asarray(boxes)
    half = window // 2
    padded = np.pad(np.asarray(boxes, np.float64), ((half, window - 1 - half), (0, 0)), mode="edge")
    kernel = np.ones(window) / window
    smoothed = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(4)], axis=1)
    return np.round(smoothed).astype(np.int64)


def crop_face(frame: np.ndarray, box: Sequence[int], size: int = 96) -> np.ndarray:
    """Resize the box region of one (H, W, 3) frame to (size, size, 3), box clipped to the frame."""
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in box)
    x1, x2 = np.clip([x1, x2], 0, width)
    y1, y2 = np.clip([y1, y2], 0, height)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"face box {tuple(box)} lies outside the {width}x{height} frame")
    return cv2.resize(frame[y1:y2, x1:x2], (size, size))


def detect_video(detector, video_path: str, batch_size: int = 32, smooth_window: int = 1,
                 progress: bool = False) -> np.ndarray:
    """(N, 4) int64 face boxes for every frame of ``video_path``, decoded and detected in batches;
    frames without a face are interpolated, then boxes optionally smoothed over time."""
    from tqdm import tqdm
    from utils.video import VideoReader
    raw = []
    with VideoReader(video_path) as reader:
        bar = tqdm(total=reader.num_frames, desc="detect faces", unit="frame", disable=not progress)
        for frames in reader.batches(batch_size):
            raw.extend(detector.detect_batch(frames))
            bar.update(len(frames))
        bar.close()
    return smooth_boxes(fill_missing_boxes(raw, source=video_path), smooth_window)
