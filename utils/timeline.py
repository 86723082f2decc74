"""Where video frames and the 25 Hz audio features meet in time: shared by dubbing and evaluation."""
from typing import Optional

import numpy as np

from utils.audio import FEATURE_RATE_HZ


def frame_feature_rows(num_frames: int, fps: float, num_feats: Optional[int] = None) -> np.ndarray:
    """Row of the 25 Hz audio features that plays at each video frame's time (at most the last of
    ``num_feats`` rows, when given)."""
    rows = np.floor(np.arange(num_frames) * FEATURE_RATE_HZ / fps + 1e-6).astype(np.int64)
    return rows if num_feats is None else np.minimum(rows, num_feats - 1)


def ping_pong(num_out: int, num_in: int) -> np.ndarray:
    """Source frame for each output frame: forward, then backward, then forward... (0 for stills)."""
    if num_in <= 1:
        return np.zeros(num_out, dtype=np.int64)
    period = 2 * (num_in - 1)
    phase = np.arange(num_out) % period
    return np.where(phase < num_in, phase, period - phase)
