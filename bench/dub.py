"""Benchmark dubbing: throughput and peak memory on synthetic 1280x720 clips, and generator speed.

    python bench/dub.py [--lengths 10 60 300] [--workdir /tmp/talklip_bench]

Prints one JSON line. For each clip length a fresh process dubs a synthetic 720p talking-face clip
(random generator weights, OpenCV face detector) and reports frames/s and its peak RSS; peak RSS
should stay flat as the clip grows. Generator frames/s is measured at batch 1/32/128 on CPU, and
in bf16 + channels_last on CUDA when a GPU is present.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

WIDTH, HEIGHT, FPS = 1280, 720, 25


def make_clip(path: str, wav_path: str, seconds: float) -> None:
    """A 720p clip of the synthetic talking face (480 px tall, centred) and matching speech."""
    import cv2
    from preparation.make_synthetic import neutral_face, render_clip
    from preparation.speech import mouth_opening
    from utils.audio import save_wav
    from utils.video import VideoWriter
    rng = np.random.default_rng(0)
    samples = int(seconds * 16000)
    t = np.arange(samples) / 16000
    envelope = np.clip(np.sin(2 * np.pi * 1.7 * t), 0, None)
    wav = (0.3 * envelope * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(samples)).astype(np.float32)
    save_wav(wav_path, wav)
    num = int(seconds * FPS)
    face = neutral_face()
    canvas = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    with VideoWriter(path, FPS, WIDTH, HEIGHT) as writer:
        for start in range(0, num, 250):               # render in pieces: bounded memory here too
            count = min(250, num - start)
            opening = mouth_opening(wav[start * 640:(start + count) * 640], count, FPS)
            for frame, _, _ in render_clip(face, opening, np.array([3.0, 2.0, 0.3, 0.5, 1.0])):
                canvas[120:600, 400:880] = cv2.resize(frame, (480, 480))
                writer.write(canvas)


def worker(video: str, wav: str, ckpt: str) -> dict:
    from face_detection import CascadeDetector
    from models.synthesis import SynthesisOptions, dub
    from models.talklip import load_talklip
    generator = load_talklip(ckpt)
    started = time.perf_counter()
    info = dub(generator, video, wav, os.path.join(os.path.dirname(video), "out.mp4"), CascadeDetector(),
               SynthesisOptions(progress=False))
    elapsed = time.perf_counter() - started
    return {"frames": info["frames"], "seconds": round(elapsed, 1), "frames_per_s": round(info["frames"] / elapsed, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def generator_speed(device, batches=(1, 32, 128), dtype=None) -> dict:
    import torch
    from models.talklip import TalkLip
    model = TalkLip().to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    result = {}
    for batch in batches:
        faces = torch.rand(batch, 6, 96, 96, device=device)
        if device.type == "cuda":
            faces = faces.to(memory_format=torch.channels_last)
        emb = torch.randn(batch, 768, device=device)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False)
        with torch.no_grad(), ctx:
            model.render(faces, emb)
            if device.type == "cuda":
                torch.cuda.synchronize()
            repeat = max(1, 64 // batch) if device.type == "cpu" else 20
            started = time.perf_counter()
            for _ in range(repeat):
                model.render(faces, emb)
            if device.type == "cuda":
                torch.cuda.synchronize()
        result[f"batch_{batch}"] = round(batch * repeat / (time.perf_counter() - started), 1)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=float, nargs="+", default=[10, 60, 300], help="clip lengths in seconds")
    parser.add_argument("--workdir", default="/tmp/talklip_bench", help="where clips and outputs go")
    parser.add_argument("--worker", nargs=3, metavar=("VIDEO", "WAV", "CKPT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    import torch
    from models.talklip import TalkLip
    os.makedirs(args.workdir, exist_ok=True)
    ckpt = os.path.join(args.workdir, "random_talklip.pth")
    if not os.path.exists(ckpt):
        torch.manual_seed(0)
        torch.save({"state_dict": TalkLip().state_dict()}, ckpt)
    result = {"bench": "dub", "resolution": f"{WIDTH}x{HEIGHT}", "torch": torch.__version__,
              "cpu_threads": torch.get_num_threads(), "cpu_clips": {}}
    for seconds in args.lengths:
        folder = os.path.join(args.workdir, f"clip_{int(seconds)}s")
        os.makedirs(folder, exist_ok=True)
        video, wav = os.path.join(folder, "in.mp4"), os.path.join(folder, "in.wav")
        if not os.path.exists(video):
            make_clip(video, wav, seconds)
        proc = subprocess.run([sys.executable, __file__, "--worker", video, wav, ckpt], capture_output=True,
                              text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        result["cpu_clips"][f"{int(seconds)}s"] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["cpu_generator_frames_per_s"] = generator_speed(torch.device("cpu"))
    if torch.cuda.is_available():
        result["gpu_name"] = torch.cuda.get_device_name(0)
        result["gpu_generator_frames_per_s_bf16"] = generator_speed(torch.device("cuda"), dtype=torch.bfloat16)
    else:
        result["gpu_generator_frames_per_s_bf16"] = None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
