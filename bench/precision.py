"""What --precision bf16 does to a dub's pixels: the bf16 dub against the fp32 dub of the same clip.

    python -m bench.precision --ckpt_path G.pth [--wav_path speech.wav] [--run_dir runs/quickstart --pairs 10]

The astronaut's face drifting in 720p (``bench.paste``'s clip) is dubbed twice by inf_demo.py, with
``--precision fp32`` and ``--precision bf16``; prints the PSNR between the two in the face box (OpenCV's
cascade on the source) and over the whole frame. With ``--run_dir`` (a quickstart run), its first
``--pairs`` test clips are also dubbed with the next clip's speech in bf16 and fp32, and their mouth sync
against the driving speech is given for both. One JSON line.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from bench.media import speech
from bench.paste import ROOT, largest_face_box, psnr, source_clip
from face_detection import CascadeDetector
from utils.cli import positive_int
from utils.video import VideoReader


def inf_demo(video: str, wav: str, ckpt: str, out: str, precision: str) -> None:
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "inf_demo.py"), "--video_path", video, "--wav_path", wav,
                           "--ckpt_path", ckpt, "--save_path", out, "--device", "cpu", "--no_progress",
                           "--precision", precision], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    if proc.returncode != 0:
        raise SystemExit(f"inf_demo.py failed: {proc.stderr.strip().splitlines()[-1:]}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True, help="the generator")
    parser.add_argument("--wav_path", default=None, help="the speech (default: a modulated tone)")
    parser.add_argument("--run_dir", default=None, help="a quickstart run: also its corpus' mouth sync")
    parser.add_argument("--pairs", type=positive_int, default=10)
    args = parser.parse_args(argv)
    result = {"generator": args.ckpt_path}
    with tempfile.TemporaryDirectory(prefix="talklip_precision_") as work:
        clip, wav = os.path.join(work, "astronaut.mp4"), args.wav_path or os.path.join(work, "speech.wav")
        source_clip(clip, 3.0)
        if not args.wav_path:
            speech(wav, 3.0, pitch_hz=180.0)
        outs = {p: os.path.join(work, f"{p}.mp4") for p in ("fp32", "bf16")}
        for precision, out in outs.items():
            inf_demo(clip, wav, args.ckpt_path, out, precision)
        cascade, face, whole = CascadeDetector(), [], []
        with VideoReader(clip) as src, VideoReader(outs["fp32"]) as a, VideoReader(outs["bf16"]) as b:
            for frame, x, y in zip(src, a, b):
                box = largest_face_box(cascade, frame)
                whole.append(psnr(x, y))
                if box is not None:
                    x1, y1, x2, y2 = box
                    face.append(psnr(x[y1:y2, x1:x2], y[y1:y2, x1:x2]))
        result["astronaut_720p"] = {"face_psnr_db": round(float(np.mean(face)), 2),
                                    "face_psnr_min_db": round(float(np.min(face)), 2),
                                    "frame_psnr_db": round(float(np.mean(whole)), 2), "frames": len(whole)}
        if args.run_dir:
            from evaluation.mouth_sync import dub_mouth_sync, load_ground_truth
            from utils.fileio import read_filelist
            corpus = os.path.join(args.run_dir, "corpus")
            names = read_filelist(os.path.join(args.run_dir, "lists", "test.txt"))[:args.pairs + 1]
            sync = {"fp32": [], "bf16": []}
            for face_clip, voice in zip(names[:-1], names[1:]):
                for precision in sync:
                    out = os.path.join(work, f"corpus_{precision}.mp4")
                    inf_demo(f"{corpus}/main/{face_clip}.mp4", f"{corpus}/audio/{voice}.wav", args.ckpt_path, out,
                             precision)
                    scored = dub_mouth_sync(out, load_ground_truth(f"{corpus}/gt/{face_clip}.npz"),
                                            load_ground_truth(f"{corpus}/gt/{voice}.npz"))
                    sync[precision].append(scored["r"])
            result["corpus_mouth_sync"] = {p: round(float(np.mean(v)), 3) for p, v in sync.items()}
            result["corpus_mouth_sync_min"] = {p: round(float(np.min(v)), 3) for p, v in sync.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
