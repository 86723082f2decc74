"""How a generator's training crops frame the face, against the box the detector finds where it dubs.

A generator learns faces cropped by its training set's boxes; a dub crops by the boxes the detector finds in the
video dubbed. When the two frame the face differently the generator is shown a face at another scale and place
than it learnt. GRID shows how far apart they can be: its copies are 160 x 160 windows in which the face fills
the frame, where the cascade's box is 0.86 as wide as, and starts a sixth of the box lower than, the box the same
cascade finds in GRID's own 360 x 288 video (the copy's top edge cuts it); a dub of that video showed the
generator a face 0.76 as tall as those it learnt, and it painted the background's blue onto the cheek.

A *framing* is four fractions ``(x1, y1, x2, y2)`` of the detector's box (its width for x, its height for y): the
crop the training boxes take of the face the detector boxes at dub time. ``preparation.grid`` measures it where
it knows both (each copy's box against the source video's box mapped into the copy) and writes it beside the
boxes (``<bbx_root>/face_framing.json``); ``train.py`` records it in the generator checkpoint
(``face_framing``); the dub maps every detected box by it when its detector is the one it was measured with.
"""
import json
import os
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from utils.fileio import atomic_output

FRAMING_FILE = "face_framing.json"


def measure_framing(detector_boxes: Iterable[np.ndarray], crop_boxes: Iterable[np.ndarray]) -> Tuple[np.ndarray, int]:
    """(framing (4,), frames): the median over frames of each crop box's edges as fractions of the detector's box
    on the same frame (pairs of (N, 4) x1 y1 x2 y2 arrays in one frame's pixels)."""
    rel = []
    for det, crop in zip(detector_boxes, crop_boxes):
        det, crop = np.asarray(det, np.float64), np.asarray(crop, np.float64)
        n = min(len(det), len(crop))
        det, crop = det[:n], crop[:n]
        w, h = det[:, 2] - det[:, 0], det[:, 3] - det[:, 1]
        ok = (w > 0) & (h > 0)
        rel.append(np.stack([(crop[:, 0] - det[:, 0]) / w, (crop[:, 1] - det[:, 1]) / h,
                             (crop[:, 2] - det[:, 0]) / w, (crop[:, 3] - det[:, 1]) / h], 1)[ok])
    rel = np.concatenate(rel) if rel else np.zeros((0, 4))
    if not len(rel):
        raise ValueError("no frame with both boxes to measure a framing on")
    return np.median(rel, 0), len(rel)


def valid_framing(framing) -> Optional[Tuple[float, float, float, float]]:
    """The framing as a 4-tuple of floats when it is one (edges in order, within half a box of the box), else None."""
    try:
        x1, y1, x2, y2 = (float(v) for v in framing)
    except (TypeError, ValueError):
        return None
    inside = all(-0.5 <= v <= 1.5 for v in (x1, y1, x2, y2))
    return (x1, y1, x2, y2) if inside and x2 - x1 > 0.2 and y2 - y1 > 0.2 else None


def frame_box(box: Sequence[float], framing: Sequence[float]) -> np.ndarray:
    """The crop a framing takes of a detector's box: (4,) int64 x1 y1 x2 y2."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    return np.array([x1 + framing[0] * w, y1 + framing[1] * h, x1 + framing[2] * w, y1 + framing[3] * h]
                    ).round().astype(np.int64)


def write_framing(bbx_root: str, framing: Sequence[float], detector: str, frames: int, note: str) -> str:
    path = os.path.join(bbx_root, FRAMING_FILE)
    with atomic_output(path) as tmp, open(tmp, "w") as handle:
        json.dump({"framing": [round(float(v), 4) for v in framing], "detector": detector, "frames": int(frames),
                   "note": note}, handle, indent=1)
    return path


def read_framing(bbx_root: str) -> Optional[dict]:
    """``{"framing", "detector"}`` from ``<bbx_root>/face_framing.json``, or None without one (or with a bad one)."""
    path = os.path.join(bbx_root, FRAMING_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as handle:
            found = json.load(handle)
        framing = valid_framing(found.get("framing"))
    except (OSError, ValueError, AttributeError):
        return None
    return {"framing": list(framing), "detector": str(found.get("detector", ""))} if framing else None


def framing_for(recorded, detector_name: str) -> Tuple[Optional[Tuple[float, float, float, float]], Optional[str]]:
    """(framing or None, a note or None) for a generator's recorded ``face_framing`` and the dub's detector: the
    framing applies only with the detector it was measured with; a bad record is ignored, with a note."""
    if not recorded:
        return None, None
    framing = valid_framing(recorded.get("framing")) if isinstance(recorded, dict) else None
    if framing is None:
        return None, f"the generator's face_framing record {recorded!r} is not four fractions of a box: faces are " \
                     f"cropped by the detector's boxes as found"
    measured_with = str(recorded.get("detector", ""))
    if measured_with != detector_name:
        return None, (f"the generator learnt faces framed as {measured_with or 'an unnamed detector'}'s boxes frame "
                      f"them, and this dub's detector is {detector_name}: faces are cropped by its boxes as found")
    return framing, None
