"""Speed and memory of the real main job on GRID: a TalkLip training step per stage, and dubbing GRID's own video.

    python -m bench.grid_speed --data_root data/grid [--ckpt runs/grid/train/checkpoint_stepN.pth] [--steps 10]

Prints one JSON line (append it to a results file with >>):
- ``train``: seconds per step of each stage (0: L1 + perceptual + GAN with the audio encoder frozen; 1: the encoder
  fine-tuned; 2: with the expert's lip loss and the contrastive loss) at the real main job's settings (the cpu preset,
  batch 2, 4 windows a clip, the GRID expert's encoder, bf16 where the CPU computes it natively), measured over
  ``--steps`` steps after a warm-up on one batch of prepared GRID s1 clips, and the process' peak RSS;
- ``dub``: ``inf_demo.py`` on a GRID clip's real 360 x 288 video (the first test sentence, from the path its gt
  records) with the next test sentence's speech, in a fresh process: frames/s (its own report of the dub's time),
  wall seconds, and its peak RSS (its ru_maxrss, read by a small parent). ``--ckpt`` is the generator to dub with (default: a random
  cpu-preset generator with the GRID expert's encoder, as the job's step 0 saves it: the same arithmetic).

GRID: Cooke et al. 2006, CC BY 4.0.
"""
import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from training.data import collate
from training.trainer import TrainConfig, Trainer
from utils.cli import positive_int
from utils.device import has_native_bf16

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERT = os.path.join(ROOT, "weights", "grid_s1_expert.pt")
# runs a command from a small process and reports its peak RSS: a child forked from this (large) process would count
# this one's resident pages in its own ru_maxrss
PEAK_OF_CHILD = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
                 "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
                 "sys.exit(rc)")


def train_steps(data_root: str, workdir: str, steps: int, bf16: bool) -> dict:
    cfg = TrainConfig(file_dir=data_root, video_root=f"{data_root}/main", audio_root=f"{data_root}/audio",
                      bbx_root=f"{data_root}/bbx", word_root=f"{data_root}/main", avhubert_path=EXPERT,
                      checkpoint_dir=f"{workdir}/ckpt", generator_preset="cpu", batch_size=2, windows_per_clip=4,
                      num_worker=0, lr=2e-3, disc_lr=1e-4, perp_w=0.02, tensorboard=False, no_progress=True,
                      device="cpu", bf16=bf16)
    trainer = Trainer(cfg)
    trainer.save()                                             # the step-0 generator: what dub() runs by default
    batches = [trainer.to_device(collate([trainer.data.train_set[2 * b + i] for i in range(2)])) for b in range(4)]
    out = {}
    for stage in (0, 1, 2):
        trainer.curriculum.stage = stage
        trainer.train_step([batches[0]])                       # warm-up (the stage's first step builds its graph)
        start = time.perf_counter()
        for k in range(steps):
            trainer.train_step([batches[k % len(batches)]])
        out[f"stage{stage}_s_per_step"] = round((time.perf_counter() - start) / steps, 3)
    out["faces_per_step"] = int(batches[0]["faces_in"].shape[0])
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def dub(data_root: str, ckpt: str, workdir: str) -> dict:
    with open(f"{data_root}/test.txt") as handle:
        face, speech = [line.split()[0] for line in handle if line.strip()][:2]
    source = str(np.load(f"{data_root}/gt/{face}.npz")["source"])
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, sys.executable, os.path.join(ROOT, "inf_demo.py"),
                           "--video_path", source, "--wav_path",
                           f"{data_root}/audio/{speech}.wav", "--ckpt_path", ckpt, "--save_path",
                           f"{workdir}/dub.mp4", "--device", "cpu", "--no_progress"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"inf_demo.py failed on {source}: {proc.stderr.strip().splitlines()[-1]}")
    said = re.search(r"(\d+) frames at [\d.]+ fps \([\d.]+ s\) in ([\d.]+)s", proc.stdout + proc.stderr)
    frames, seconds = int(said.group(1)), float(said.group(2))
    peak_kb = int(re.search(r"peak_rss_kb (\d+)", proc.stderr).group(1))
    return {"video": os.path.basename(source), "size": "360x288", "frames": frames, "frames_per_s": round(frames / seconds, 1),
            "wall_s": round(wall, 1), "peak_rss_mb": round(peak_kb / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", required=True, help="a folder preparation.grid wrote")
    parser.add_argument("--ckpt", default=None, help="generator to dub with (default: the job's step-0 generator)")
    parser.add_argument("--steps", type=positive_int, default=10, help="timed steps per stage")
    args = parser.parse_args()
    bf16 = has_native_bf16(torch.device("cpu"))     # bf16 where the CPU computes it, as the job's auto
    with tempfile.TemporaryDirectory() as workdir:
        with contextlib.redirect_stdout(sys.stderr):          # the trainer's notes: stdout holds the JSON line only
            train = train_steps(args.data_root, workdir, args.steps, bf16)
        ckpt = args.ckpt or sorted(f for f in os.listdir(f"{workdir}/ckpt") if f.startswith("checkpoint_step"))[0]
        ckpt = ckpt if args.ckpt else f"{workdir}/ckpt/{ckpt}"
        result = {"bench": "grid_speed", "data": "GRID s1 (Cooke et al. 2006, CC BY 4.0)", "torch": torch.__version__,
                  "cpu_threads": torch.get_num_threads(), "precision": "bf16" if bf16 else "fp32",
                  "train": train, "dub": dub(args.data_root, ckpt, workdir)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
