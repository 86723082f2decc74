"""LSE-C and LSE-D: lip-speech sync of synthesized videos, measured by SyncNet (Chung & Zisserman).

    python -m evaluation.sync_eval --data_root SYNT --filelist test.txt --initial_model syncnet_v2.model

``SyncNet`` has the state-dict keys of syncnet_python's ``syncnet_v2.model`` (which loads safely,
without syncnet_python). Scores follow TalkLip's ``SyncNetInstance_calc_scores.py``: frames resized
to 224 x 224, 5-frame windows against 20 MFCC frames (100 Hz, ``python_speech_features.mfcc``),
distances for every offset within +/- ``vshift`` frames averaged over the clip; LSE-D is the
smallest mean distance, LSE-C the median minus that, ``offset`` the best shift. Frames are decoded
in memory (the original wrote every frame as a JPEG first, so its numbers differ very slightly).
"""
import argparse
import dataclasses
import math
from typing import Dict, Optional, Tuple

import cv2
import numpy as np
import python_speech_features
import torch
import torch.nn as nn
import torch.nn.functional as F

from evaluation.common import (ClipRun, add_clip_args, clip_run, evaluate_clips, exit_status, file_identity,
                               from_args, scored)
from utils.cli import add_device_arg, non_negative_int, positive_int
from utils.audio import AUDIO_RATE_HZ, float_to_int16, load_audio
from utils.checkpoint import load_state_dict_file, load_strict, strip_prefixes
from utils.device import resolve_device
from utils.errors import MediaError, run_cli
from utils.video import VideoReader

SYNC_SIZE = 224
WINDOW = 5                  # video frames per SyncNet input
MFCC_PER_FRAME = 4          # 100 Hz MFCC / 25 fps video
SAMPLES_PER_FRAME = AUDIO_RATE_HZ // 25


def _bn_relu(conv, channels, bn=nn.BatchNorm2d):
    return [conv, bn(channels), nn.ReLU(inplace=True)]


class SyncNet(nn.Module):
    """syncnet_python's ``S``: ``forward_aud`` (N, 1, 13, 20) MFCC -> (N, 1024), ``forward_lip``
    (N, 3, 5, 224, 224) BGR in [0, 255] -> (N, 1024)."""

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        c2, c3 = nn.Conv2d, nn.Conv3d
        self.netcnnaud = nn.Sequential(
            *_bn_relu(c2(1, 64, 3, 1, 1), 64), nn.MaxPool2d(1, 1),
            *_bn_relu(c2(64, 192, 3, 1, 1), 192), nn.MaxPool2d(3, (1, 2)),
            *_bn_relu(c2(192, 384, 3, padding=1), 384),
            *_bn_relu(c2(384, 256, 3, padding=1), 256),
            *_bn_relu(c2(256, 256, 3, padding=1), 256), nn.MaxPool2d(3, 2),
            *_bn_relu(c2(256, 512, (5, 4)), 512))
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))
        bn3 = nn.BatchNorm3d
        self.netcnnlip = nn.Sequential(
            *_bn_relu(c3(3, 96, (5, 7, 7), (1, 2, 2)), 96, bn3), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_bn_relu(c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, bn3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_bn_relu(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),
            *_bn_relu(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),
            *_bn_relu(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_bn_relu(c3(256, 512, (1, 6, 6)), 512, bn3))

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, video: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(video).flatten(1))


def load_syncnet(path: str, device="cpu"):
    """SyncNet from syncnet_python's ``syncnet_v2.model`` (a state dict, legacy torch format), or a
    ``MouthSyncNet`` that ``train_syncnet.py`` wrote (a corpus' own, e.g. GRID's)."""
    from models.mouth_syncnet import from_saved, is_mouth_syncnet
    from utils.checkpoint import load_torch_file
    saved = load_torch_file(path, "SyncNet model")
    if is_mouth_syncnet(saved):
        return from_saved(saved).to(device)
    state = strip_prefixes(load_state_dict_file(path, what="SyncNet model"))
    model = SyncNet()
    load_strict(model, state, source=path)
    return model.to(device).eval()


def mfcc_features(wav: np.ndarray) -> np.ndarray:
    """(13, T) MFCCs at 100 Hz of 16 kHz speech, on the int16 scale as the original read it."""
    wav = np.asarray(wav)
    if wav.dtype != np.int16:
        wav = float_to_int16(wav.astype(np.float32))
    return python_speech_features.mfcc(wav, AUDIO_RATE_HZ).T.astype(np.float32)


def offset_scores(video_feats: torch.Tensor, audio_feats: torch.Tensor, vshift: int) -> Dict:
    """The original's calc_pdist + scoring. Row i of the (2*vshift+1) distances compares video
    window i with audio window i + j - vshift (zero-padded outside the clip).
    -> {'lse_d', 'lse_c', 'offset', 'mean_dists'}; offset = vshift - argmin, so audio running k
    windows late (audio[t + k] matches video[t]) gives offset -k."""
    win = 2 * vshift + 1
    padded = F.pad(audio_feats, (0, 0, vshift, vshift))
    n = len(video_feats)
    idx = torch.arange(n)[:, None] + torch.arange(win)[None]             # (n, win)
    dists = F.pairwise_distance(video_feats[:, None].expand(-1, win, -1).reshape(n * win, -1),
                                padded[idx].reshape(n * win, -1)).view(n, win)
    mean = dists.mean(0)
    minval, minidx = torch.min(mean, 0)
    return {"lse_d": float(minval), "lse_c": float(torch.median(mean) - minval),
            "offset": int(vshift - minidx), "mean_dists": mean}


def _window_scores(model, video_windows, mfcc: torch.Tensor, usable: int, vshift: int, batch_size: int) -> Dict:
    """LSE over a clip's ``usable`` frames: the video windows ``video_windows(start, stop)`` (a batch of them) and
    the 0.2 s of ``mfcc`` at each, embedded in batches, then ``offset_scores`` (the original's window count:
    one short of all)."""
    last = usable - WINDOW
    if last < 1:
        raise ValueError(f"clip too short for SyncNet: {usable} frames, need at least {WINDOW + 1}")
    device = next(model.parameters()).device
    video_feats, audio_feats = [], []
    for start in range(0, last, batch_size):
        stop = min(last, start + batch_size)
        video_feats.append(model.forward_lip(video_windows(start, stop).to(device)).cpu())
        cc = torch.stack([mfcc[:, MFCC_PER_FRAME * v: MFCC_PER_FRAME * v + 20] for v in range(start, stop)])
        audio_feats.append(model.forward_aud(cc[:, None].to(device)).cpu())
    scores = offset_scores(torch.cat(video_feats), torch.cat(audio_feats), vshift)
    scores.pop("mean_dists")
    return scores


@torch.no_grad()
def lse(frames_bgr: np.ndarray, wav_16k: np.ndarray, syncnet: SyncNet, vshift: int = 15,
        batch_size: int = 20) -> Dict:
    """LSE-D / LSE-C / offset of one clip. frames_bgr: (T, 224, 224, 3) uint8 BGR at 25 fps;
    wav_16k: int16 or float samples at 16 kHz."""
    frames = np.asarray(frames_bgr)
    if frames.ndim != 4 or frames.shape[1:] != (SYNC_SIZE, SYNC_SIZE, 3):
        raise ValueError(f"frames must be T x {SYNC_SIZE} x {SYNC_SIZE} x 3, got {frames.shape}")

    def windows(start, stop):                                                       # (B, 3, 5, H, W)
        clip = torch.from_numpy(frames[start:stop + WINDOW - 1]).float().permute(3, 0, 1, 2)
        return torch.stack([clip[:, i:i + WINDOW] for i in range(stop - start)])
    usable = min(len(frames), math.floor(len(wav_16k) / SAMPLES_PER_FRAME))
    return _window_scores(syncnet, windows, torch.from_numpy(mfcc_features(wav_16k)), usable, vshift, batch_size)


@torch.no_grad()
def lse_from_inputs(model, rois: torch.Tensor, mfcc: torch.Tensor, vshift: int = 15, batch_size: int = 64) -> Dict:
    """``lse`` for a ``MouthSyncNet``: (T, S, S) mouth ROIs (``model.frame_input``) and (13, M) MFCCs at 100 Hz."""
    def windows(start, stop):                                                       # (B, 5, S, S)
        return torch.stack([rois[i:i + WINDOW] for i in range(start, stop)])
    usable = min(len(rois), mfcc.shape[1] // MFCC_PER_FRAME)
    return _window_scores(model, windows, mfcc, usable, vshift, batch_size)


def read_sync_frames(path: str) -> Tuple[np.ndarray, float]:
    """All frames of a video resized to 224 x 224 (uint8 BGR), and its frame rate."""
    with VideoReader(path) as reader:
        fps = reader.fps
        frames = np.empty((reader.num_frames, SYNC_SIZE, SYNC_SIZE, 3), np.uint8)
        count = 0
        for frame in reader:
            if count == len(frames):
                frames = np.concatenate([frames, np.empty_like(frames[:max(1, len(frames))])])
            frames[count] = cv2.resize(frame, (SYNC_SIZE, SYNC_SIZE))
            count += 1
    return frames[:count], fps


def clip_sync(path: str, syncnet, vshift: int, batch_size: int, audio_path: Optional[str] = None) -> Dict:
    """LSE of a video with its own speech (or ``audio_path``'s: another clip's, to see what mismatch scores)."""
    from models.mouth_syncnet import MouthSyncNet
    mouth = isinstance(syncnet, MouthSyncNet)
    if mouth:
        with VideoReader(path) as reader:
            fps, frames = reader.fps, np.stack(list(reader))
    else:
        frames, fps = read_sync_frames(path)
    if abs(fps - 25) > 0.01:
        raise MediaError(f"{path} runs at {fps:g} fps; SyncNet scores assume 25 fps: re-encode it at 25 fps")
    wav = load_audio(audio_path or path)
    if mouth:
        return lse_from_inputs(syncnet, syncnet.frame_input(frames), torch.from_numpy(mfcc_features(wav)), vshift)
    return lse(frames, wav, syncnet, vshift=vshift, batch_size=batch_size)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", required=True, help="folder of synthesized <name>.mp4 (with audio)")
    parser.add_argument("--initial_model", required=True,
                        help="syncnet_python's syncnet_v2.model, or a corpus' own SyncNet (train_syncnet.py)")
    parser.add_argument("--vshift", type=non_negative_int, default=15, help="largest offset tried, in frames")
    parser.add_argument("--batch_size", type=positive_int, default=20, help="windows per SyncNet batch")
    add_device_arg(parser)
    add_clip_args(parser)
    return parser.parse_args(argv)


@dataclasses.dataclass
class SyncOptions:
    data_root: str                 # synthesized <name>.mp4 with their audio
    initial_model: str             # syncnet_v2.model
    vshift: int = 15
    batch_size: int = 20
    device: str = "auto"


def metric(opts: SyncOptions, syncnet=None):
    syncnet = syncnet or load_syncnet(opts.initial_model, resolve_device(opts.device))
    return lambda name: clip_sync(f"{opts.data_root}/{name}.mp4", syncnet, opts.vshift, opts.batch_size)


def evaluate(opts: SyncOptions, run: ClipRun, names=None) -> dict:
    return evaluate_clips(run, f"sync_vshift{opts.vshift}", metric(opts), opts.data_root, "--data_root",
                          names=names, settings={"vshift": opts.vshift, "model": file_identity(opts.initial_model)})


def main(args) -> int:
    run = clip_run(args)
    summary = evaluate(from_args(SyncOptions, args), run)
    print(f"LSE-D {summary['lse_d']:.3f}, LSE-C {summary['lse_c']:.3f} over {scored(summary)}")
    return exit_status([summary], run.allow_missing)


if __name__ == "__main__":
    run_cli(main, parse_args())
