"""The transfer probe as a benchmark: does the expert's gradient draw mouths an independent reader reads?

    python -m bench.expert_transfer --run_dir runs/quickstart [--expert E.pt [E2.pt ...]]
        [--observer weights/grid_observer.pt] [--clips 10] [--steps 60] [--lr 0.05] [--lip_augment K]
    python -m bench.expert_transfer --data_root data/grid --expert weights/grid_s1_expert.pt \
        --observer weights/grid_s1_observer.pt --starts blurred          # real mouths (preparation.grid)

By default the gradient is the shipped ensemble's (weights/grid_expert.pt, _2.pt, _3.pt: train.py
--lip_ensemble) averaged over 2 augmented copies (train.py --lip_augment 2, its noise and shift), the
lip loss that transfers best; ``--expert weights/grid_expert.pt --lip_augment 0`` is train.py's default.

Starts (each a row of the JSON line):
- ``blurred``: the test split's true mouth crops, Gaussian-blurred (--blur_sigma px) and averaged over
  --blur_frames frames, the way L1 leaves generated mouths;
- ``untrained``: the untrained generator's synthesized test split (<run_dir>/synt_before, written by the
  quickstart), when present.
For each: Adam on the crops' pixels under the expert's lip-reading loss for the true transcript, then
greedy decoding by the expert and by the observer: per-clip WER capped at 1 (mean) and corpus WER,
before and after, with the mean pixel change. ``truth`` gives both readers on the unchanged true crops.
Prints one JSON line (evaluation.expert_transfer).
"""
import argparse
import json
import os
import time

from evaluation.expert_transfer import ProbeClip, ProbeOptions, blurred_start, read_all, run_probe
from models.avhubert import load_lip_reader
from models.avhubert.ensemble import ExpertEnsemble
from models.avhubert.reading import mouth_rois
from training.config import TrainConfig
from training.mouth_augment import CropAugment
from utils.cli import non_negative_float, non_negative_int, positive_float, positive_int
from utils.corpus import read_transcript
from utils.errors import run_cli
from utils.fileio import read_filelist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--run_dir", help="a quickstart run: corpus/main, lists/test.txt, synt_before/")
    where.add_argument("--data_root", help="a prepared corpus instead (preparation.grid's out_dir: main/, test.txt)")
    p.add_argument("--expert", nargs="+", default=[os.path.join(ROOT, "weights", f"grid_expert{tag}.pt")
                                                   for tag in ("", "_2", "_3")],
                   help="the reader whose gradient is used; several: one lip loss over their ensemble "
                        "(models.avhubert.ensemble; the first one's reading is 'expert', the others' 'expert_member_i')")
    p.add_argument("--observer", default=os.path.join(ROOT, "weights", "grid_observer.pt"), help="the independent reader")
    p.add_argument("--clips", type=positive_int, default=10, help="the first N test clips")
    p.add_argument("--steps", type=non_negative_int, default=ProbeOptions.steps, help="Adam steps on the crops")
    p.add_argument("--lr", type=positive_float, default=ProbeOptions.lr, help="Adam's step size (normalised units)")
    p.add_argument("--blur_sigma", type=non_negative_float, default=ProbeOptions.blur_sigma_px,
                   help="the blurred start's Gaussian sigma in pixels")
    p.add_argument("--blur_frames", type=positive_int, default=ProbeOptions.blur_frames,
                   help="the blurred start's moving average over frames (odd)")
    p.add_argument("--lip_augment", type=non_negative_int, default=2,
                   help="average the loss over this many augmented copies (train.py --lip_augment); 0: the plain loss")
    p.add_argument("--augment_noise", type=non_negative_float, default=TrainConfig.lip_augment_noise,
                   help="the copies' noise std (train.py --lip_augment_noise)")
    p.add_argument("--augment_shift", type=non_negative_int, default=TrainConfig.lip_augment_shift,
                   help="the copies' shift in px (train.py --lip_augment_shift)")
    p.add_argument("--augment_blur", type=non_negative_float, default=0.0,
                   help="also blur half the copies, sigma drawn from U(0.5, this) px (a low-pass on the gradient)")
    p.add_argument("--starts", nargs="+", choices=["blurred", "untrained"], default=["blurred", "untrained"],
                   help="which starts to probe (untrained needs <run_dir>/synt_before)")
    args = p.parse_args(argv)
    if args.blur_frames % 2 == 0:
        p.error(f"--blur_frames must be odd, not {args.blur_frames}")
    return args


def main(args) -> int:
    if args.data_root:
        corpus, test_list = os.path.join(args.data_root, "main"), os.path.join(args.data_root, "test.txt")
    else:
        corpus, test_list = os.path.join(args.run_dir, "corpus", "main"), os.path.join(args.run_dir, "lists", "test.txt")
    names = read_filelist(test_list)[:args.clips]
    experts = [load_lip_reader(e, "give the expert as train_expert.py writes it") for e in args.expert]
    expert = experts[0] if len(experts) == 1 else ExpertEnsemble(experts, args.expert)
    observer = load_lip_reader(args.observer, "give the observer as train_expert.py writes it")
    opts = ProbeOptions(steps=args.steps, lr=args.lr, blur_sigma_px=args.blur_sigma, blur_frames=args.blur_frames,
                        lip_augment=args.lip_augment,
                        augment=CropAugment(noise_std=args.augment_noise, shift_px=args.augment_shift,
                                            blur_sigma=args.augment_blur))
    refs = [read_transcript(corpus, n).upper() for n in names]
    truth = [mouth_rois(f"{corpus}/{n}.mp4") for n in names]
    line = {"expert": args.expert, "observer": args.observer, "run_dir": args.run_dir or args.data_root,
            "truth": {who: {k: v for k, v in read_all(r, truth, refs).items() if k != "hypotheses"}
                      for who, r in [("expert", experts[0]), ("observer", observer)]
                      + [(f"expert_member_{i}", e) for i, e in enumerate(experts[1:], 1)]}}
    starts = {"blurred": lambda: [blurred_start(r, opts) for r in truth]}
    synt = os.path.join(args.run_dir or args.data_root, "synt_before")
    if os.path.isdir(synt):
        starts["untrained"] = lambda: [mouth_rois(f"{synt}/{n}.mp4") for n in names]
    for start in args.starts:
        if start not in starts:
            line[start] = {"skipped": f"no {synt} (run the quickstart first)"}
            continue
        began = time.time()
        clips = [ProbeClip(n, ref, rois) for n, ref, rois in zip(names, refs, starts[start]())]
        line[start] = {**run_probe(expert, observer, clips, opts), "seconds": round(time.time() - began, 1)}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
