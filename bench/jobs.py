"""Batch dubbing against one process per clip: ``inf_demo.py --jobs`` (the model loaded once) over N clips,
and N separate ``inf_demo.py`` runs of the same clips, timed in the same run.

    python -m bench.jobs [--clips 20] [--seconds 3] [--ckpt_path G.pth]

Prints one JSON line: seconds for each way, the ratio (separate / batch), and whether the outputs are
identical (they must be: the same dub, one process or many). Without ``--ckpt_path`` a random-weight
generator at the cpu preset is used.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

from bench.media import random_generator, speech
from utils.cli import positive_float, positive_int

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clip(path: str, seconds: float, k: int) -> None:
    """The astronaut's head drifting in a 320x240 frame (each clip a few frames longer than the last)."""
    import cv2
    import numpy as np
    import skimage.data
    from utils.video import VideoWriter
    head = cv2.resize(np.ascontiguousarray(skimage.data.astronaut()[0:300, 100:360, ::-1]), (130, 150))
    with VideoWriter(path, 25.0, 320, 240) as writer:
        for n in range(int(seconds * 25) + k % 3):
            frame = np.full((240, 320, 3), 90, np.uint8)
            frame[40:190, 90 + n % 20:220 + n % 20] = head
            writer.write(frame)


def inf_demo(*args) -> None:
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "inf_demo.py"), *map(str, args), "--device", "cpu",
                           "--no_progress"], capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    if proc.returncode != 0:
        raise SystemExit(f"inf_demo.py failed: {proc.stderr.strip().splitlines()[-1:]}")


def digest(paths) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            h.update(handle.read())
    return h.hexdigest()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=positive_int, default=20)
    parser.add_argument("--seconds", type=positive_float, default=3.0)
    parser.add_argument("--ckpt_path", default=None, help="the generator (default: random weights, cpu preset)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="talklip_jobs_") as work:
        ckpt = args.ckpt_path or os.path.join(work, "random.pth")
        if not args.ckpt_path:
            random_generator(ckpt)
        rows = []
        for k in range(args.clips):
            clip(os.path.join(work, f"clip{k}.mp4"), args.seconds, k)
            speech(os.path.join(work, f"speech{k}.wav"), args.seconds - 0.1 * (k % 4))
            rows.append(f"clip{k}.mp4,speech{k}.wav,batch/{k}.mp4")
        with open(os.path.join(work, "jobs.csv"), "w") as handle:
            handle.write("video,speech,output\n" + "\n".join(rows) + "\n")
        started = time.perf_counter()
        inf_demo("--jobs", os.path.join(work, "jobs.csv"), "--ckpt_path", ckpt)
        batch = time.perf_counter() - started
        started = time.perf_counter()
        for k in range(args.clips):
            inf_demo("--video_path", os.path.join(work, f"clip{k}.mp4"), "--wav_path", os.path.join(work, f"speech{k}.wav"),
                     "--ckpt_path", ckpt, "--save_path", os.path.join(work, "single", f"{k}.mp4"))
        single = time.perf_counter() - started
        same = digest(os.path.join(work, "batch", f"{k}.mp4") for k in range(args.clips)) == \
            digest(os.path.join(work, "single", f"{k}.mp4") for k in range(args.clips))
        print(json.dumps({"clips": args.clips, "seconds_each": args.seconds, "generator": args.ckpt_path or "random",
                          "batch_s": round(batch, 1), "separate_s": round(single, 1),
                          "speedup": round(single / batch, 2), "identical_outputs": same}))


if __name__ == "__main__":
    main()
