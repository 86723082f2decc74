"""Random, differentiable changes of the expert's mouth crops, and the blur that makes mouths hard to read.

Used three ways:
- training the expert (``train_expert.py --noise_std/--blur_sigma/--shift_px``): randomized smoothing,
  so that the expert reads through noise instead of keying on pixel patterns no other reader sees;
- inside the lip loss (``train.py --lip_augment K``): the loss averaged over K augmented copies of the
  generated crops, as CLIP guidance averages over augmentations, so that only changes that survive the
  augmentations lower it (off whenever the generator is not training);
- the transfer probe (``evaluation.expert_transfer``): ``blur_rois`` degrades the true crops the way L1
  leaves generated mouths (soft in space and in time).

Crops are the expert's normalised input, ``video (B, 1, T, 88, 88)`` or ``rois (T, 88, 88)``: grey in
[0, 1] minus ``ROI_MEAN``, over ``ROI_STD`` (models.avhubert.expert_input).
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from models.avhubert.expert_input import ROI_MEAN, ROI_STD

# The normalised value of a black and of a white pixel: crops changed by a gradient are clamped here.
ROI_LOW, ROI_HIGH = (0.0 - ROI_MEAN) / ROI_STD, (1.0 - ROI_MEAN) / ROI_STD


def gaussian_kernel(sigma_px: float) -> torch.Tensor:
    """(2r+1,) normalised Gaussian taps, r = ceil(3 sigma)."""
    radius = max(1, math.ceil(3.0 * sigma_px))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / sigma_px) ** 2)
    return (taps / taps.sum()).float()


def spatial_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of the last two dimensions, edges replicated; any leading shape."""
    if sigma_px <= 0:
        return images
    taps = gaussian_kernel(sigma_px).to(images)
    r = (len(taps) - 1) // 2
    shape = images.shape
    flat = images.reshape(-1, 1, *shape[-2:])
    flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="replicate"), taps.view(1, 1, -1, 1))
    return flat.reshape(shape)


def temporal_average(rois: torch.Tensor, frames: int) -> torch.Tensor:
    """(T, H, W) -> the mean over a centred window of ``frames`` frames (odd), the ends repeated."""
    if frames <= 1:
        return rois
    if frames % 2 == 0:
        raise ValueError(f"the moving average needs an odd number of frames, not {frames}")
    half = frames // 2
    padded = torch.cat([rois[:1].expand(half, *rois.shape[1:]), rois, rois[-1:].expand(half, *rois.shape[1:])])
    return padded.unfold(0, frames, 1).mean(-1)


def blur_rois(rois: torch.Tensor, sigma_px: float, frames: int) -> torch.Tensor:
    """The probe's hard-to-read start: (T, 88, 88) crops blurred in space (Gaussian, ``sigma_px``) and
    then in time (a ``frames``-frame moving average)."""
    return temporal_average(spatial_blur(rois, sigma_px), frames)


@dataclass(frozen=True)
class CropAugment:
    """One draw per clip: Gaussian noise of a std drawn from U(0, ``noise_std``) (normalised units; 1.0 is
    42 grey levels), with probability ``blur_p`` a Gaussian blur of sigma U(0.5, ``blur_sigma``) px, and a
    translation of up to ``shift_px`` in x and y (edges replicated). All zero: the identity."""
    noise_std: float = 0.0
    blur_sigma: float = 0.0
    blur_p: float = 0.5
    shift_px: int = 0

    @property
    def active(self) -> bool:
        return self.noise_std > 0 or self.blur_sigma > 0 or self.shift_px > 0

    def __call__(self, video: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """video (B, 1, T, H, W) -> the same shape, each clip changed by its own draw; differentiable in
        ``video``. Padding frames are changed too: the padding mask still hides them."""
        if not self.active:
            return video
        clips = []
        for clip in video:
            draws = torch.rand(5, generator=generator).tolist()
            if self.shift_px > 0:
                dx, dy = (round((2 * u - 1) * self.shift_px) for u in draws[:2])
                clip = shift(clip, dx, dy)
            if self.blur_sigma > 0 and draws[2] < self.blur_p:
                clip = spatial_blur(clip, 0.5 + draws[3] * max(0.0, self.blur_sigma - 0.5))
            if self.noise_std > 0:
                noise = torch.randn(clip.shape, generator=generator).to(clip)
                clip = clip + noise * (draws[4] * self.noise_std)
            clips.append(clip)
        return torch.stack(clips)


def shift(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Translate the last two dimensions by (dx, dy) whole pixels, the edge rows repeated."""
    if dx == 0 and dy == 0:
        return images
    h, w = images.shape[-2:]
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))
    flat = F.pad(images.reshape(-1, 1, h, w), pad, mode="replicate")
    top, left = max(-dy, 0), max(-dx, 0)
    return flat[..., top:top + h, left:left + w].reshape(images.shape)
