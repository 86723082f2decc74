"""A small SyncNet for one corpus' mouths (Chung and Zisserman 2016's recipe at CPU size), for LSE-C / LSE-D
on real video where the released ``syncnet_v2.model`` is not at hand (GRID, trained by ``train_syncnet.py``).

Like the original it embeds 5 video frames (0.2 s) and 0.2 s of 13 MFCCs (20 rows at 100 Hz) in one space in
which in-sync pairs lie close; ``evaluation.sync_eval`` scores a clip with it exactly as with the original
(distances at every offset within +/- vshift frames, LSE-D the smallest mean distance, LSE-C the median minus
it). Its video input is what every reader of the project takes, the central 96 x 96 of a face-centred frame
(a mouth-centred ROI in a ``preparation.grid`` copy), grey, at ``MouthSyncConfig.size`` px, the 5 frames as
channels; the MFCCs are standardised per coefficient by the training set's statistics (kept in the file).
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict

import cv2
import numpy as np
import torch
import torch.nn as nn

from models.avhubert.expert_input import BGR_TO_GREY, ROI_MEAN, ROI_SOURCE, ROI_STD

WINDOW = 5                 # video frames per input, as the original
MFCC_ROWS = 20             # 100 Hz MFCC rows per input (0.2 s)
MFCC_PER_FRAME = 4         # 100 Hz / 25 fps
KIND = "talklip_mouth_syncnet"


@dataclass(frozen=True)
class MouthSyncConfig:
    size: int = 48             # the ROI's side in pixels
    width: int = 32            # channels of the first convolution (doubled twice on the way down)
    embed_dim: int = 128

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _block(cin: int, cout: int, stride) -> list:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class MouthSyncNet(nn.Module):
    """``forward_lip`` (N, 5, size, size) normalised grey -> (N, D); ``forward_aud`` (N, 1, 13, 20) MFCC -> (N, D)."""

    def __init__(self, cfg: MouthSyncConfig = MouthSyncConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.lip = nn.Sequential(*_block(WINDOW, w, 1), *_block(w, 2 * w, 2), *_block(2 * w, 2 * w, 1),
                                 *_block(2 * w, 4 * w, 2), *_block(4 * w, 4 * w, 2), *_block(4 * w, 8 * w, 2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * w, cfg.embed_dim))
        self.aud = nn.Sequential(*_block(1, w, 1), *_block(w, 2 * w, (1, 2)), *_block(2 * w, 4 * w, 2),
                                 *_block(4 * w, 8 * w, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(8 * w, cfg.embed_dim))
        self.register_buffer("mfcc_mean", torch.zeros(13, 1))
        self.register_buffer("mfcc_std", torch.ones(13, 1))

    def forward_lip(self, windows: torch.Tensor) -> torch.Tensor:
        return self.lip(windows)

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.aud((mfcc - self.mfcc_mean) / self.mfcc_std)

    def frame_input(self, frames_bgr: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 BGR frames -> (T, size, size) normalised grey: the central 96 x 96 (all of a
        smaller frame), grey, resized to ``size``."""
        out = np.empty((len(frames_bgr), self.cfg.size, self.cfg.size), np.float32)
        for i, frame in enumerate(frames_bgr):
            top, left = max(0, (frame.shape[0] - ROI_SOURCE) // 2), max(0, (frame.shape[1] - ROI_SOURCE) // 2)
            crop = frame[top:top + ROI_SOURCE, left:left + ROI_SOURCE].astype(np.float32)
            grey = sum(crop[..., c] * w for c, w in enumerate(BGR_TO_GREY))
            out[i] = cv2.resize(grey, (self.cfg.size, self.cfg.size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy((out / 255.0 - ROI_MEAN) / ROI_STD)

    def state(self) -> Dict[str, Any]:
        return {"kind": KIND, "config": self.cfg.to_dict(), "model": self.state_dict()}


def is_mouth_syncnet(saved: Any) -> bool:
    return isinstance(saved, dict) and saved.get("kind") == KIND


def from_saved(saved: Dict[str, Any]) -> MouthSyncNet:
    model = MouthSyncNet(MouthSyncConfig(**saved["config"]))
    model.load_state_dict(saved["model"])
    return model.eval()
