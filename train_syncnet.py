"""Train a small SyncNet (models/mouth_syncnet.py) on a prepared corpus' train split, for LSE-C / LSE-D on its
real video (GRID: ``python -m preparation.grid``), on CPU.

    python train_syncnet.py --file_dir O --video_root O/main --out weights/grid_s1_syncnet.pt [--steps 3000]

As SyncNet was trained, in-sync pairs against shifted ones: each step takes a 5-frame window of a clip and
the 0.2 s of speech at every offset within +/- ``--max_shift`` frames of it, and the loss is the
cross-entropy of the in-sync offset under a softmax over the negative distances (Chung et al.'s multi-way
matching: every shifted window of the same clip is a negative). At the end it scores the validation clips
as ``evaluation.sync_eval`` does: the share whose best offset is 0 (within +/- 1 frame), LSE-C / LSE-D with
their own speech, and LSE-C with another clip's speech; ``--test_filelist`` adds the same on those clips.
"""
import argparse
import json
import os
import time
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.mouth_syncnet import MFCC_PER_FRAME, MFCC_ROWS, WINDOW, MouthSyncConfig, MouthSyncNet
from utils.audio import load_audio
from utils.checkpoint import save_atomic
from utils.cli import non_negative_int, positive_float, positive_int
from utils.errors import TalkLipError, run_cli
from utils.fileio import atomic_output, read_filelist
from utils.video import VideoReader


class SyncClips:
    """Every clip of a split as (T, size, size) mouth ROIs and (13, 4T+) MFCCs, read once."""

    def __init__(self, names: List[str], video_root: str, model: MouthSyncNet, progress: bool = True):
        from evaluation.sync_eval import mfcc_features
        self.names, self.video, self.mfcc = [], [], []
        for name in tqdm(names, desc="reading clips", unit="clip", leave=False, disable=not progress):
            path = os.path.join(video_root, f"{name}.mp4")
            with VideoReader(path) as reader:
                rois = model.frame_input(np.stack(list(reader)))
            mfcc = torch.from_numpy(mfcc_features(load_audio(path)))
            usable = min(len(rois), (mfcc.shape[1] - MFCC_ROWS) // MFCC_PER_FRAME + 1)
            if usable < WINDOW + 2:
                continue
            self.names.append(name)
            self.video.append(rois[:usable])
            self.mfcc.append(mfcc)
        if not self.names:
            raise TalkLipError(f"no clip under {video_root} is long enough for SyncNet ({WINDOW + 2} frames with speech)")


def audio_windows(mfcc: torch.Tensor, starts) -> torch.Tensor:
    """(len(starts), 1, 13, 20) MFCC windows beginning at video frames ``starts``."""
    return torch.stack([mfcc[:, MFCC_PER_FRAME * s: MFCC_PER_FRAME * s + MFCC_ROWS] for s in starts])[:, None]


def train_batch(clips: SyncClips, rng: np.random.Generator, batch: int, max_shift: int, size: int):
    """(video (B, 5, S, S), audio (B * (2K+1), 1, 13, 20)): each clip's window at t and its speech at t + o for
    every o in -K..K (K = ``max_shift``, offsets past the clip's ends clamped onto it); the in-sync one is K."""
    videos, audios = [], []
    for i in rng.integers(0, len(clips.video), batch):
        rois, mfcc = clips.video[i], clips.mfcc[i]
        t = int(rng.integers(0, len(rois) - WINDOW + 1))
        clip = rois[t:t + WINDOW]
        dx, dy = rng.integers(-2, 3, 2)                      # a shift of up to 2 px: the ROI is not fixed to the px
        clip = torch.roll(clip, (int(dy), int(dx)), (1, 2))
        videos.append(clip)
        last = len(rois) - WINDOW
        audios.append(audio_windows(mfcc, [min(max(t + o, 0), last) for o in range(-max_shift, max_shift + 1)]))
    return torch.stack(videos), torch.cat(audios)


def sync_loss(model: MouthSyncNet, video: torch.Tensor, audio: torch.Tensor, max_shift: int):
    v = model.forward_lip(video)                                        # (B, D)
    a = model.forward_aud(audio).view(len(v), 2 * max_shift + 1, -1)    # (B, 2K+1, D)
    dist = torch.linalg.vector_norm(v[:, None] - a, dim=-1)
    target = torch.full((len(v),), max_shift, dtype=torch.long)
    # offsets within a frame of the true one show nearly the same speech: they are left out of the softmax
    near = torch.zeros(2 * max_shift + 1, dtype=torch.bool)
    near[max_shift - 1], near[max_shift + 1] = True, True
    logits = (-dist).masked_fill(near, float("-inf"))
    loss = F.cross_entropy(logits, target)
    return loss, float((logits.argmax(1) == target).float().mean())


@torch.no_grad()
def score_clips(model: MouthSyncNet, clips: SyncClips, vshift: int = 15) -> Dict[str, float]:
    """As ``evaluation.sync_eval`` scores: per clip the offset and LSE-C/D with its own speech, and LSE-C with the
    next clip's speech (another sentence); the share of clips whose best offset is within +/- 1 frame of 0."""
    from evaluation.sync_eval import lse_from_inputs
    model.eval()
    rows = []
    for i in range(len(clips.video)):
        own = lse_from_inputs(model, clips.video[i], clips.mfcc[i], vshift)
        other = lse_from_inputs(model, clips.video[i], clips.mfcc[(i + 1) % len(clips.video)], vshift)
        rows.append({"offset": own["offset"], "lse_c": own["lse_c"], "lse_d": own["lse_d"],
                     "lse_c_other": other["lse_c"], "lse_d_other": other["lse_d"]})
    model.train()
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("lse_c", "lse_d", "lse_c_other", "lse_d_other")}
    return {"clips": len(rows), "offset_within_1": float(np.mean([abs(r["offset"]) <= 1 for r in rows])),
            "offset_0": float(np.mean([r["offset"] == 0 for r in rows])), **mean,
            "lse_c_ratio": mean["lse_c"] / max(mean["lse_c_other"], 1e-9)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file_dir", required=True, help="folder of train.txt and valid.txt")
    parser.add_argument("--video_root", required=True, help="folder of <spk>/<clip>.mp4 with their speech")
    parser.add_argument("--out", required=True, help="the SyncNet file to write (.pt)")
    parser.add_argument("--out_json", default=None, help="also write the validation results here")
    parser.add_argument("--test_filelist", default=None, help="also score these held-out clips")
    parser.add_argument("--steps", type=positive_int, default=3000, help="optimisation steps")
    parser.add_argument("--batch_size", type=positive_int, default=32, help="video windows per step")
    parser.add_argument("--max_shift", type=positive_int, default=10, help="offsets -K..K frames in each softmax")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="peak Adam learning rate")
    parser.add_argument("--size", type=positive_int, default=48, help="the mouth ROI's side in pixels")
    parser.add_argument("--width", type=positive_int, default=32, help="channels of the first convolution")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights and the batches")
    parser.add_argument("--eval_every", type=non_negative_int, default=0, help="score the validation clips every N steps")
    parser.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    return parser.parse_args(argv)


def main(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = MouthSyncNet(MouthSyncConfig(size=args.size, width=args.width))
    progress = not args.no_progress
    train = SyncClips(read_filelist(os.path.join(args.file_dir, "train.txt")), args.video_root, model, progress)
    valid = SyncClips(read_filelist(os.path.join(args.file_dir, "valid.txt")), args.video_root, model, progress)
    every = torch.cat(train.mfcc, 1)
    model.mfcc_mean.copy_(every.mean(1, keepdim=True))
    model.mfcc_std.copy_(every.std(1, keepdim=True).clamp_min(1e-3))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    warm = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, s / args.steps)))))
    started, curve, recent = time.time(), [], []
    bar = tqdm(range(args.steps), desc="train SyncNet", unit="step", disable=not progress)
    for step in bar:
        video, audio = train_batch(train, rng, args.batch_size, args.max_shift, args.size)
        loss, acc = sync_loss(model, video, audio, args.max_shift)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        recent = (recent + [acc])[-50:]
        bar.set_postfix_str(f"loss {loss.item():.3f} acc {np.mean(recent):.2f}")
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            point = {"step": step + 1, "seconds": round(time.time() - started, 1), "train_acc": float(np.mean(recent)),
                     **score_clips(model, valid)}
            curve.append(point)
            print(f"syncnet step {point['step']} ({point['seconds']} s): train accuracy {point['train_acc']:.2f}; "
                  f"validation offset 0 (+/-1) on {point['offset_within_1']:.2f} of clips, LSE-C {point['lse_c']:.2f} "
                  f"(another clip's speech {point['lse_c_other']:.2f}), LSE-D {point['lse_d']:.2f}", flush=True)
    result = {"steps": args.steps, "seconds": round(time.time() - started, 1), "settings": vars(args),
              **score_clips(model, valid), "curve": curve}
    if args.test_filelist:
        test = SyncClips(read_filelist(args.test_filelist), args.video_root, model, progress)
        result.update({f"test_{k}": v for k, v in score_clips(model, test).items()})
    save_atomic({**model.eval().state(), "train_summary": result}, args.out)
    if args.out_json:
        with atomic_output(args.out_json) as tmp, open(tmp, "w") as handle:
            json.dump(result, handle, indent=1)
    print(f"SyncNet written to {args.out}: validation offset within 1 frame of 0 on {result['offset_within_1']:.2f} "
          f"of clips, LSE-C {result['lse_c']:.2f} against {result['lse_c_other']:.2f} with another clip's speech "
          f"(x{result['lse_c_ratio']:.1f}), LSE-D {result['lse_d']:.2f}"
          + (f"; test clips {result['test_offset_within_1']:.2f}, LSE-C {result['test_lse_c']:.2f} against "
             f"{result['test_lse_c_other']:.2f}" if args.test_filelist else ""))
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
