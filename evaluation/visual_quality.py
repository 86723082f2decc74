"""PSNR and SSIM of synthesized faces against the originals, on the paper's 96x96 face crops.

    python -m evaluation.visual_quality --synt_root SYNT --orig_root LRS2/main --bbx_root LRS2/bbx --filelist test.txt

For every frame both videos have, the face box of the original (``bbx_root``) is cut from each
frame and resized to 96 x 96 (TalkLip's protocol); the corpus values are means over all frames.
PSNR is computed in floating point; ``--legacy_uint8_psnr`` reproduces the original script, which
subtracted uint8 arrays, so squared errors wrapped around modulo 256 and PSNR came out too high.
"""
import argparse
import dataclasses
import itertools
import math
from typing import Dict, Iterator, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.common import (ClipRun, add_clip_args, clip_run, evaluate_clips, exit_status, from_args,
                               scored)
from utils.corpus import load_boxes
from face_detection.boxes import crop_face
from utils.errors import MediaError, run_cli
from utils.video import VideoReader

FACE = 96
SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5        # skimage's gaussian_weights=True window (11 taps)
SSIM_K1, SSIM_K2, DATA_RANGE = 0.01, 0.03, 255.0


def psnr(a: np.ndarray, b: np.ndarray, legacy_uint8: bool = False) -> float:
    """PSNR in dB of two H x W x 3 uint8 frames; 100 when identical (as the original).

    ``legacy_uint8``: the original's ``np.mean((gt - synt) ** 2)`` on uint8 arrays, which wraps."""
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
    if legacy_uint8:
        mse = float(np.mean((a.astype(np.uint8) - b.astype(np.uint8)) ** 2))
    else:
        mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0:
        return 100.0
    return 20 * math.log10(DATA_RANGE / math.sqrt(mse))


def _gaussian_window() -> torch.Tensor:
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return w / w.sum()


def ssim_batch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image of (N, H, W, C) uint8 batches, as skimage's ``structural_similarity``
    with gaussian_weights=True, sigma 1.5, use_sample_covariance=False, data_range 255, averaged
    over channels; like skimage, only pixels whose whole window lies inside the image count."""
    x = a.permute(0, 3, 1, 2).double()
    y = b.permute(0, 3, 1, 2).double()
    n, c = x.shape[:2]
    w = _gaussian_window()
    k = len(w)

    def blur(t):                                  # separable 'valid' Gaussian filter, per channel
        t = t.reshape(n * c, 1, *t.shape[2:])
        t = F.conv2d(t, w.view(1, 1, 1, k))
        t = F.conv2d(t, w.view(1, 1, k, 1))
        return t.view(n, c, *t.shape[2:])

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(2, 3)).mean(dim=1)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two H x W x 3 uint8 frames (see ``ssim_batch``)."""
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
    return float(ssim_batch(torch.from_numpy(np.ascontiguousarray(a))[None],
                            torch.from_numpy(np.ascontiguousarray(b))[None])[0])


def face_pairs(synt_path: str, orig_path: str, boxes: np.ndarray, batch: int = 64
               ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Batches of (synthesized, original) 96x96 face crops, frame by frame, streaming both videos.
    The two videos must decode to the same number of frames (a cut synthesized clip is an error,
    not a score over its first frames)."""
    with VideoReader(synt_path) as synt, VideoReader(orig_path) as orig:
        out_s, out_o = [], []
        counts = [0, 0]
        for i, (fs, fo) in enumerate(itertools.zip_longest(synt, orig)):
            counts = [counts[0] + (fs is not None), counts[1] + (fo is not None)]
            if fs is None or fo is None:
                continue
            if i >= len(boxes):
                raise MediaError(f"{orig_path} has more frames than its {len(boxes)} face boxes: "
                                 f"rerun bbx_extract for it")
            out_s.append(crop_face(fs, boxes[i], FACE))
            out_o.append(crop_face(fo, boxes[i], FACE))
            if len(out_s) == batch:
                yield np.stack(out_s), np.stack(out_o)
                out_s, out_o = [], []
        if counts[0] != counts[1]:
            raise MediaError(f"{synt_path} decodes to {counts[0]} frames but its original {orig_path} to "
                             f"{counts[1]}: re-synthesize it (a damaged or cut file)")
        if out_s:
            yield np.stack(out_s), np.stack(out_o)


def clip_quality(synt_path: str, orig_path: str, boxes: np.ndarray, legacy_uint8_psnr: bool = False) -> Dict:
    """Per-clip sums over frames: {'frames', 'psnr', 'ssim'} (means over the clip's frames)."""
    psnrs, ssims = [], []
    for synt, orig in face_pairs(synt_path, orig_path, boxes):
        psnrs += [psnr(o, s, legacy_uint8_psnr) for s, o in zip(synt, orig)]
        ssims += ssim_batch(torch.from_numpy(orig), torch.from_numpy(synt)).tolist()
    if not psnrs:
        raise MediaError(f"{synt_path} has no frames to compare: re-synthesize it")
    return {"frames": len(psnrs), "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synt_root", required=True, help="folder of synthesized <name>.mp4")
    parser.add_argument("--orig_root", required=True, help="folder of original <name>.mp4 (LRS2 main/)")
    parser.add_argument("--bbx_root", required=True, help="folder of <name>.npy face boxes")
    parser.add_argument("--legacy_uint8_psnr", action="store_true",
                        help="reproduce the original's wrapped-around uint8 PSNR (the paper's numbers)")
    add_clip_args(parser)
    return parser.parse_args(argv)


@dataclasses.dataclass
class VisualQualityOptions:
    synt_root: str                 # synthesized <name>.mp4
    orig_root: str                 # original <name>.mp4
    bbx_root: str                  # <name>.npy face boxes of the originals
    legacy_uint8_psnr: bool = False


def metric(opts: VisualQualityOptions):
    """The per-clip function."""
    def run(name):
        return clip_quality(f"{opts.synt_root}/{name}.mp4", f"{opts.orig_root}/{name}.mp4",
                            load_boxes(opts.bbx_root, name), opts.legacy_uint8_psnr)
    return run


def evaluate(opts: VisualQualityOptions, run: ClipRun, names=None) -> dict:
    """The corpus summary (frame-weighted means) with per-clip rows, cached per clip."""
    tag = "visual_quality_legacy" if opts.legacy_uint8_psnr else "visual_quality"
    return evaluate_clips(run, tag, metric(opts), opts.synt_root, "--synt_root", weight="frames", names=names,
                          references=lambda n: [f"{opts.orig_root}/{n}.mp4", f"{opts.bbx_root}/{n}.npy"],
                          settings={"legacy_uint8_psnr": opts.legacy_uint8_psnr})


def main(args) -> int:
    run = clip_run(args)
    summary = evaluate(from_args(VisualQualityOptions, args), run)
    print(f"PSNR {summary['psnr']:.3f} dB, SSIM {summary['ssim']:.4f} over {scored(summary)}")
    return exit_status([summary], run.allow_missing)


if __name__ == "__main__":
    run_cli(main, parse_args())
