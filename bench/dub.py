"""Benchmark dubbing at 720p: end-to-end speed in the default and the original detection mode,
seconds per stage, peak memory against clip length, and generator speed folded vs unfolded.

    python bench/dub.py [--lengths 10 60 300] [--original_seconds 1] [--workdir /tmp/talklip_bench]

Prints one JSON line. Clips are 1280x720, 25 fps: a photographed head (skimage's astronaut)
drifting and bobbing, with speech-like audio. The generator is the paper's TalkLip with random
weights. Detection cost is S3FD's, with random weights in the original key layout: its forward pass
and post-processing run on exactly the frames (and resolution) the pipeline asks for, while the
boxes come from OpenCV's cascade on the same frames (random S3FD weights find no real face, and the
key-frame logic needs real boxes to behave as it would). Each clip runs in a fresh process, so its
peak RSS is its own.
- speed: the default mode (--detect_every 8 --detect_max_side 640) on the first length, and the
  original's mode (--detect_every 1 --detect_max_side 0) on ``--original_seconds``; frames/s of both
  and the ratio;
- memory: peak RSS of the default mode for every length (it should stay flat), and within each run
  the RSS sampled every half second, as the peak of each quarter of the run (no climb within a run);
- generator frames/s at batch 32, unfolded vs folded + channels-last, on CPU (and bf16 on CUDA).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.cli import positive_float  # noqa: E402

WIDTH, HEIGHT, FPS = 1280, 720, 25


def make_clip(path: str, wav_path: str, seconds: float) -> None:
    """A 720p clip of a real head moving like a talking head, and matching speech-like audio."""
    import cv2
    import skimage.data
    from utils.audio import AUDIO_RATE_HZ, save_wav
    from utils.video import VideoWriter
    rng = np.random.default_rng(0)
    samples = int(seconds * AUDIO_RATE_HZ)
    t = np.arange(samples) / AUDIO_RATE_HZ
    envelope = np.clip(np.sin(2 * np.pi * 1.7 * t), 0, None)
    wav = (0.3 * envelope * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(samples)).astype(np.float32)
    save_wav(wav_path, wav)
    photo = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    head = cv2.resize(photo[0:300, 100:360], (520, 600))
    with VideoWriter(path, FPS, WIDTH, HEIGHT) as writer:
        for k in range(int(seconds * FPS)):
            canvas = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
            x = 380 + int(round(120 * np.sin(k / 90)))
            y = 60 + int(round(10 * np.sin(k / 20)))
            canvas[y:y + 600, x:x + 520] = head
            writer.write(canvas)


class S3FDCostCascadeBoxes:
    """S3FD's full cost on the frames asked about (random weights), the cascade's boxes."""

    def __init__(self):
        import torch
        from face_detection import CascadeDetector, S3FD, S3FDDetector
        torch.manual_seed(0)
        self.s3fd = S3FDDetector(S3FD().state_dict())
        self.cascade = CascadeDetector()

    def detect_faces(self, frames):
        self.s3fd.detect_faces(frames)
        return self.cascade.detect_faces(frames)


class RssSampler:
    """The process' resident memory every ``period`` seconds, in a daemon thread (Linux /proc)."""

    def __init__(self, period: float = 0.5):
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) / 1024

    def _run(self):
        while not self._stop.wait(self.period):
            self.samples.append(self.rss_mb())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def quarter_peaks(self) -> list:
        n = len(self.samples)
        return [round(max(self.samples[k * n // 4:(k + 1) * n // 4] or [0.0]), 1) for k in range(4)]


def worker(video: str, wav: str, ckpt: str, detect_every: int, max_side: int, unfolded: bool) -> dict:
    from face_detection.tracking import TrackingOptions
    from models.synthesis import SynthesisOptions, dub
    from models.talklip import load_talklip, prepare_for_inference
    from utils.pipeline import map_large_buffers
    map_large_buffers()                  # as inf_demo.py does: this process dubs one clip
    generator = load_talklip(ckpt)
    if not unfolded:
        prepare_for_inference(generator)
    tracking = TrackingOptions(detect_every=detect_every, detect_max_side=max_side, smooth_window=5)
    out = os.path.join(os.path.dirname(video), f"out_{detect_every}_{max_side}.mp4")
    detector = S3FDCostCascadeBoxes()
    started = time.perf_counter()
    with RssSampler() as rss:
        info = dub(generator, video, wav, out, detector, SynthesisOptions(progress=False), tracking)
    elapsed = time.perf_counter() - started
    return {"frames": info.frames, "seconds": round(elapsed, 1), "frames_per_s": round(info.frames / elapsed, 3),
            "detected_frames": info.detected_frames, "frames_with_face": info.frames_with_face,
            "stage_seconds": info.seconds,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_mb_peak_by_quarter": rss.quarter_peaks()}


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


def generator_speed_folded(batch: int = 32, repeat: int = 3) -> dict:
    """CPU frames/s of the paper's generator as loaded, and folded + channels-last (same weights)."""
    import copy
    import torch
    from models.synthesis import render_faces
    from models.talklip import TalkLip, prepare_for_inference
    torch.manual_seed(0)
    model = TalkLip().eval()
    folded = prepare_for_inference(copy.deepcopy(model))
    faces, emb = torch.rand(batch, 6, 96, 96), torch.randn(batch, 768)
    result = {}
    for name, net in (("unfolded", model), ("folded", folded)):
        render_faces(net, faces, emb, "cpu", batch)
        started = time.perf_counter()
        for _ in range(repeat):
            render_faces(net, faces, emb, "cpu", batch)
        result[name] = round(batch * repeat / (time.perf_counter() - started), 2)
    result["ratio"] = round(result["folded"] / result["unfolded"], 3)
    return result


def run_worker(video, wav, ckpt, detect_every, max_side, unfolded=False) -> dict:
    cmd = [sys.executable, __file__, "--worker", video, wav, ckpt, str(detect_every), str(max_side)]
    proc = subprocess.run(cmd + (["--unfolded"] if unfolded else []), capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def clip_in(workdir: str, seconds: float):
    folder = os.path.join(workdir, f"clip_{seconds:g}s")
    os.makedirs(folder, exist_ok=True)
    video, wav = os.path.join(folder, "in.mp4"), os.path.join(folder, "in.wav")
    if not os.path.exists(video):
        make_clip(video, wav, seconds)
    return video, wav


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=positive_float, nargs="+", default=[10, 60, 300],
                        help="clip lengths in seconds for the default mode (speed on the first, memory on all)")
    parser.add_argument("--original_seconds", type=positive_float, default=1.0,
                        help="clip length for the original's every-frame full-resolution mode (slow: ~10 s/frame)")
    parser.add_argument("--workdir", default="/tmp/talklip_bench", help="where clips and outputs go")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--unfolded", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        video, wav, ckpt, every, side = args.worker
        print(json.dumps(worker(video, wav, ckpt, int(every), int(side), args.unfolded)))
        return
    import torch
    from models.talklip import TalkLip
    os.makedirs(args.workdir, exist_ok=True)
    ckpt = os.path.join(args.workdir, "random_talklip.pth")
    if not os.path.exists(ckpt):
        torch.manual_seed(0)
        torch.save({"state_dict": TalkLip().state_dict()}, ckpt)
    result = {"bench": "dub", "resolution": f"{WIDTH}x{HEIGHT}", "torch": torch.__version__,
              "cpu_threads": torch.get_num_threads(), "default_mode": {}}
    for seconds in args.lengths:
        video, wav = clip_in(args.workdir, seconds)
        result["default_mode"][f"{seconds:g}s"] = run_worker(video, wav, ckpt, 8, 640)
    video, wav = clip_in(args.workdir, args.original_seconds)
    result["original_mode"] = run_worker(video, wav, ckpt, 1, 0)
    first = result["default_mode"][f"{args.lengths[0]:g}s"]
    result["speedup_default_vs_original"] = round(first["frames_per_s"] / result["original_mode"]["frames_per_s"], 2)
    result["peak_rss_mb_by_length"] = {k: v["peak_rss_mb"] for k, v in result["default_mode"].items()}
    peaks = list(result["peak_rss_mb_by_length"].values())
    result["peak_rss_spread_mb"] = round(max(peaks) - min(peaks), 1)
    result["cpu_generator_frames_per_s"] = generator_speed_folded()
    if torch.cuda.is_available():
        result["gpu_name"] = torch.cuda.get_device_name(0)
        result["gpu_generator_frames_per_s_bf16"] = generator_speed(torch.device("cuda"), dtype=torch.bfloat16)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
