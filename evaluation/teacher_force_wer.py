"""WER and CER by lip-reading observer 2 (the conformer), in TalkLip's teacher-forcing protocol.

    python -m evaluation.teacher_force_wer --data_root LRS2 --video_root SYNT --ckpt_path conformer.pth

For each clip of ``<data_root>/test.txt`` (or ``--filelist``): the synthesized video, grey,
resized to 224 x 224, its central 112 x 112, normalised (``--video_mean/--video_std``); the
decoder is fed the true transcript (``<data_root>/main/<name>.txt``, or ``--word_root``), and its
argmax predictions are scored against it. The reported numbers are means of per-clip rates.
"""
import argparse
import dataclasses
import os

import cv2
import numpy as np
import torch

from evaluation.common import (ClipRun, add_clip_args, clip_run, evaluate_clips, exit_status, file_identity,
                               from_args, scored)
from models.conformer_lip_reading import (load_conformer_lip_reader, required_length, teacher_forced_error_rates,
                                          text_to_indices)
from utils.cli import add_device_arg, any_float, any_int, non_negative_int, positive_float
from utils.corpus import read_transcript
from utils.device import resolve_device
from utils.errors import MediaError, run_cli
from utils.video import VideoReader

ROI = 112
OBSERVER2_MEAN, OBSERVER2_STD = 0.4161, 0.1688   # grey-level normalisation of the released observer 2


def read_rois(path: str, mean: float, std: float) -> torch.Tensor:
    """(T, 112, 112) normalised grey crops of a video (the original's LRS2Main)."""
    rois = []
    with VideoReader(path) as reader:
        for frame in reader:
            grey = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (224, 224))
            rois.append(grey[112 - ROI // 2: 112 + ROI // 2, 112 - ROI // 2: 112 + ROI // 2])
    if not rois:
        raise MediaError(f"{path} has no frames: re-synthesize it")
    return (torch.from_numpy(np.stack(rois)).float() / 255.0 - mean) / std


@torch.no_grad()
def clip_error_rates(model, video_path: str, text: str, mean: float, std: float, device) -> dict:
    target = text_to_indices(text)
    if not target:
        raise MediaError(f"the transcript of {video_path} has no readable characters")
    rois = read_rois(video_path, mean, std).to(device)
    n = torch.tensor([len(rois)])
    required = torch.tensor([max(required_length(target), len(rois))])
    logits = model.teacher_forced_logits(rois[None], n, required, [torch.tensor(target)])
    cer, wer = teacher_forced_error_rates(logits[0].argmax(-1).tolist(), target)
    return {"cer": cer, "wer": wer}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", required=True, help="LRS2 folder holding test.txt and main/")
    parser.add_argument("--video_root", required=True, help="folder of synthesized <name>.mp4")
    parser.add_argument("--ckpt_path", required=True, help="lip-reading observer 2 checkpoint")
    parser.add_argument("--word_root", default=None, help="folder of <name>.txt (default: <data_root>/main)")
    parser.add_argument("--video_std", type=positive_float, default=OBSERVER2_STD, help="grey-level std the observer was trained with")
    parser.add_argument("--video_mean", type=any_float, default=OBSERVER2_MEAN, help="grey-level mean the observer was trained with")
    parser.add_argument("--seed", type=any_int, default=19220297, help="accepted for compatibility")
    add_device_arg(parser)
    parser.add_argument("--num_workers", type=non_negative_int, default=0, help="accepted for compatibility")
    add_clip_args(parser, filelist_help="clip list (default: <data_root>/test.txt)")
    args = parser.parse_args(argv)
    args.filelist = args.filelist or os.path.join(args.data_root, "test.txt")
    args.word_root = args.word_root or os.path.join(args.data_root, "main")
    return args


@dataclasses.dataclass
class ConformerWerOptions:
    video_root: str                # synthesized <name>.mp4
    ckpt_path: str                 # the conformer lip reader (observer 2)
    word_root: str                 # LRS2 <name>.txt transcripts
    video_mean: float = OBSERVER2_MEAN
    video_std: float = OBSERVER2_STD
    device: str = "auto"


def metric(opts: ConformerWerOptions, model=None):
    device = resolve_device(opts.device)
    model = model or load_conformer_lip_reader(opts.ckpt_path, device)
    return lambda name: clip_error_rates(model, f"{opts.video_root}/{name}.mp4",
                                         read_transcript(opts.word_root, name), opts.video_mean,
                                         opts.video_std, device)


def evaluate(opts: ConformerWerOptions, run: ClipRun, names=None) -> dict:
    return evaluate_clips(run, "wer_conformer", metric(opts), opts.video_root, "--video_root", names=names,
                          references=lambda n: [f"{opts.word_root}/{n}.txt"],
                          settings={"model": file_identity(opts.ckpt_path), "mean": opts.video_mean,
                                    "std": opts.video_std})


def main(args) -> int:
    run = clip_run(args)
    summary = evaluate(from_args(ConformerWerOptions, args), run)
    print(f"Val.CER: {summary['cer']:.3f}  Val.WER: {summary['wer']:.3f}  ({scored(summary)})")
    return exit_status([summary], run.allow_missing)


if __name__ == "__main__":
    run_cli(main, parse_args())
