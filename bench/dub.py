"""Benchmark dubbing: end-to-end speed in the default and the original detection mode against the
generator's own speed, seconds per stage, time to the first frame, and peak memory against clip
length, speech length and frame size.

    python -m bench.dub [--lengths 10 60 300] [--speech_seconds 3600] [--uhd_seconds 5]
                        [--original_seconds 1] [--workdir /tmp/talklip_bench]

Prints one JSON line. Clips are 25 fps: a photographed head (skimage's astronaut) drifting and
bobbing, with speech-like audio (16 kHz WAV). The generator is the paper's TalkLip with random
weights, loaded from a checkpoint file as inf_demo.py loads one. Detection cost is S3FD's, with
random weights loaded from a file in the original key layout (``random_s3fd_weights``: no anchor scores
as a face, so its post-processing costs what the real weights' few candidates cost): its forward pass
runs on exactly the frames (and scale) the pipeline asks for, while the boxes come from OpenCV's
cascade on the same frames (random S3FD weights find no real face, and the key-frame logic needs real
boxes to behave as it would); the default mode pays both, S3FD's cost and the cascade's. Each dub runs
in a fresh process, so its peak RSS is its own.
- speed: the default mode (the CLI's tracking defaults) on the first length (720p), against the
  generator's own folded frames/s measured in the same run (``end_to_end_vs_generator``), and the
  original's mode (every frame, full resolution) on ``--original_seconds`` (``speedup_default_vs_original``);
- time to first frame: model and detector load, plus the dub's start to its first frame written;
- memory: peak RSS of the default mode for every 720p length, for ``--speech_seconds`` of speech over
  the first clip (played back and forth), and for a 3840x2160 clip; within each run the RSS sampled
  every half second, as the peak of each quarter of the run (no climb within a run);
- ``free_detection`` (``--free_detection``): the first length again with the cascade's boxes alone, no
  S3FD cost (what a dub without s3fd.pth runs): what the rest of the pipeline (decoding, audio,
  cropping, pasting, encoding) leaves of the generator's speed; then ``s3fd_only``: the same again with
  S3FD's cost and the boxes that run recorded (looked up by each call's frames), without the cascade's
  cost: what a dub with the real S3FD weights pays (``replay_misses`` counts calls it had no boxes for);
- ``memory_release_ab``: the first length again with SynthesisOptions.release_memory off (no heap
  trimming, the audio encoder's pages kept): the time the memory behaviour costs;
- the generator's own fp32 and bf16 frames/s on the CPU (``--precision auto`` dubs in bf16 where the CPU
  computes it natively);
- on CUDA: the generator's bf16 and fp16 frames/s and its MFU (FLOPs by torch's counter, against the
  GPU's dense tensor-core peak when it is in ``GPU_PEAK_TFLOPS``).
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from utils.cli import non_negative_float, positive_float

WIDTH, HEIGHT, FPS = 1280, 720, 25


def make_speech(path: str, seconds: float) -> None:
    """Speech-like audio (a voiced buzz under a syllable-rate envelope), 16 kHz, written in blocks."""
    import soundfile
    from utils.audio import AUDIO_RATE_HZ
    rng = np.random.default_rng(0)
    total = int(seconds * AUDIO_RATE_HZ)
    with soundfile.SoundFile(path, "w", AUDIO_RATE_HZ, 1, "PCM_16") as out:
        for start in range(0, total, 60 * AUDIO_RATE_HZ):
            t = np.arange(start, min(total, start + 60 * AUDIO_RATE_HZ)) / AUDIO_RATE_HZ
            envelope = np.clip(np.sin(2 * np.pi * 1.7 * t), 0, None)
            out.write(0.3 * envelope * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(len(t)))


def make_clip(path: str, seconds: float, width: int = WIDTH, height: int = HEIGHT) -> None:
    """A clip of a real head moving like a talking head (its size and motion scale with the frame:
    at 720p a 520x600 head), without sound (``make_speech`` writes the speech)."""
    import cv2
    import skimage.data
    from utils.video import VideoWriter
    scale = height / HEIGHT
    photo = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    head = cv2.resize(photo[0:300, 100:360], (round(520 * scale), round(600 * scale)))
    with VideoWriter(path, FPS, width, height) as writer:
        for k in range(int(seconds * FPS)):
            canvas = np.full((height, width, 3), 90, np.uint8)
            x = round((380 + 120 * np.sin(k / 90)) * scale)
            y = round((60 + 10 * np.sin(k / 20)) * scale)
            canvas[y:y + head.shape[0], x:x + head.shape[1]] = head
            writer.write(canvas)


def view_key(frames) -> str:
    """A detector call's frames, as a key (their shape and bytes hashed)."""
    import hashlib
    frames = np.ascontiguousarray(frames)
    return hashlib.blake2b(repr(frames.shape).encode() + frames.tobytes(), digest_size=16).hexdigest()


class S3FDCostCascadeBoxes:
    """S3FD's full cost on the frames asked about (random weights, loaded from a file as s3fd.pth is),
    the cascade's boxes. ``with_s3fd`` False: the boxes without S3FD's cost. ``record``: a dict that
    keeps each call's boxes under ``view_key`` of its frames; ``replay``: such a dict, whose boxes are
    returned instead of running the cascade (whose cost a dub with the real S3FD weights never pays;
    a call it lacks runs the cascade and counts in ``replay_misses``)."""

    def __init__(self, s3fd_path: str, with_s3fd: bool = True, record: dict = None, replay: dict = None):
        from face_detection import CascadeDetector, S3FDDetector
        self.s3fd = S3FDDetector(s3fd_path) if with_s3fd else None
        self.cascade = CascadeDetector()
        self.record, self.replay, self.replay_misses = record, replay, 0

    def detect_faces(self, frames):
        if self.s3fd is not None:
            self.s3fd.detect_faces(frames)
        key = view_key(frames) if self.record is not None or self.replay is not None else None
        if self.replay is not None and key in self.replay:
            return [np.array(found) for found in self.replay[key]]
        self.replay_misses += self.replay is not None
        found = self.cascade.detect_faces(frames)
        if self.record is not None:
            self.record[key] = [np.asarray(f).tolist() for f in found]
        return found


def random_s3fd_weights(seed: int = 0) -> dict:
    """S3FD's weights drawn at random (torch's default initialisation), every score head's face logit
    biased far below its background: the forward pass costs what the real network's does, and no anchor
    scores as a face. With unbiased random weights all ~5000 anchors of a 328x184 view pass the 0.05
    candidate score and their decoding and NMS cost 60-130 ms a call, where the real weights leave a few
    dozen candidates near the face (about a millisecond): a cost no real dub pays."""
    import torch
    from face_detection import S3FD
    torch.manual_seed(seed)
    state = S3FD().state_dict()
    for source, _, n_scores in S3FD.HEADS:
        state[f"{source}_mbox_conf.bias"][n_scores - 1] = -50.0     # the face channel is the last
    return state


class RssSampler:
    """The process' resident memory every ``period`` seconds, in a daemon thread (Linux /proc)."""

    def __init__(self, period: float = 0.5):
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def peak_mb() -> float:
        """This process' peak RSS since it started (VmHWM; ru_maxrss would also count the parent's
        peak before exec)."""
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024

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


def boxes_file(video: str) -> str:
    """Where a 'free_detection' dub of ``video`` keeps the cascade's boxes for an 's3fd_only' dub."""
    return os.path.join(os.path.dirname(video), "cascade_boxes.json")


def worker(video: str, wav: str, ckpt: str, s3fd: str, mode: str, release: bool, precision: str = "auto") -> dict:
    """One dub in this process: ``mode`` 'default' (the CLI's tracking defaults), 'original' (every
    frame, full resolution), 'free_detection' (the defaults, the boxes without S3FD's cost; it records
    them, ``boxes_file``) or 's3fd_only' (the defaults, S3FD's cost, the recorded boxes: what a dub with
    the real weights pays); ``release``: SynthesisOptions.release_memory; ``precision``: inf_demo.py's."""
    import torch
    from utils.device import autocast_dtype
    started = time.perf_counter()
    from face_detection.tracking import TrackingOptions
    from dubbing import SynthesisOptions, dub
    from models.talklip import load_talklip, prepare_for_inference
    dtype = autocast_dtype(precision, torch.device("cpu"))
    generator = prepare_for_inference(load_talklip(ckpt), dtype)
    record = {} if mode == "free_detection" else None
    replay = None
    if mode == "s3fd_only":
        with open(boxes_file(video)) as handle:
            replay = json.load(handle)
    detector = S3FDCostCascadeBoxes(s3fd, with_s3fd=mode != "free_detection", record=record, replay=replay)
    tracking = (TrackingOptions(detect_every=1, detect_max_side=0, smooth_window=5) if mode == "original"
                else TrackingOptions(smooth_window=5))
    load_s = time.perf_counter() - started
    out = os.path.join(os.path.dirname(wav), f"out_{mode}_{os.path.basename(video)}")
    started = time.perf_counter()
    with RssSampler() as rss:
        info = dub(generator, video, wav, out, detector,
                   SynthesisOptions(progress=False, release_memory=release, dtype=dtype), tracking)
    elapsed = time.perf_counter() - started
    if record is not None:
        from utils.fileio import atomic_output
        with atomic_output(boxes_file(video)) as tmp, open(tmp, "w") as handle:
            json.dump(record, handle)
    replayed = {"replay_misses": detector.replay_misses} if replay is not None else {}
    return {**replayed, "precision": "bf16" if dtype is torch.bfloat16 else "fp32", "frames": info.frames,
            "seconds": round(elapsed, 1), "frames_per_s": round(info.frames / elapsed, 3),
            "load_s": round(load_s, 2), "time_to_first_frame_s": round(load_s + info.first_frame_s, 2),
            "detected_frames": info.detected_frames, "detected_megapixels": round(info.detected_pixels / 1e6, 1),
            "frames_with_face": info.frames_with_face, "stage_seconds": info.seconds,
            "peak_rss_mb": round(RssSampler.peak_mb(), 1),
            "rss_mb_peak_by_quarter": rss.quarter_peaks()}


# dense bf16/fp16 tensor-core peaks (TFLOP/s), for the generator's MFU on CUDA
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0, "A10": 125.0}


def generator_flops_per_frame() -> float:
    """The paper's generator's FLOPs for one frame (torch's flop counter, one 96 x 96 face and its audio row)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from models.talklip import TalkLip
    model = TalkLip().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.render(torch.rand(1, 6, 96, 96), torch.randn(1, 768))
    return float(counter.get_total_flops())


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


def generator_speed_folded(batches=(4, 8, 32), repeat: int = 4, dtype=None) -> dict:
    """CPU frames/s of the paper's generator as loaded, and folded + channels-last (same weights), at
    the dub's batch (4), 8 and 32, under autocast to ``dtype`` when given; ``best`` is the folded model's best."""
    import copy
    import torch
    from dubbing.render import render_faces
    from models.talklip import TalkLip, prepare_for_inference
    torch.manual_seed(0)
    model = TalkLip().eval()
    folded = prepare_for_inference(copy.deepcopy(model))
    result = {}
    for batch in batches:
        faces, emb = torch.rand(batch, 6, 96, 96), torch.randn(batch, 768)
        for name, net in (("unfolded", model), ("folded", folded)):
            render_faces(net, faces, emb, "cpu", batch, dtype)
            count = max(1, 64 // batch) * repeat
            started = time.perf_counter()
            for _ in range(count):
                render_faces(net, faces, emb, "cpu", batch, dtype)
            result[f"{name}_batch_{batch}"] = round(batch * count / (time.perf_counter() - started), 2)
    result["best"] = max(v for k, v in result.items() if k.startswith("folded"))
    return result


PRECISION = "auto"


def run_worker(video, wav, ckpt, s3fd, mode="default", release=True) -> dict:
    cmd = [sys.executable, "-m", "bench.dub", "--worker", video, wav, ckpt, s3fd, mode, "1" if release else "0",
           PRECISION]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def clip_in(workdir: str, seconds: float, width: int = WIDTH, height: int = HEIGHT, speech_s: float = None):
    """(video, speech) in ``workdir``: a clip of ``seconds`` at width x height, speech of ``speech_s``
    (default: as long as the clip)."""
    folder = os.path.join(workdir, f"clip_{seconds:g}s_{width}x{height}")
    os.makedirs(folder, exist_ok=True)
    video, wav = os.path.join(folder, "in.mp4"), os.path.join(folder, f"speech_{speech_s or seconds:g}s.wav")
    if not os.path.exists(video):
        make_clip(video, seconds, width, height)
    if not os.path.exists(wav):
        make_speech(wav, speech_s or seconds)
    return video, wav


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=positive_float, nargs="+", default=[10, 60, 300],
                        help="720p clip lengths in seconds for the default mode (speed on the first, memory on all)")
    parser.add_argument("--original_seconds", type=non_negative_float, default=1.0,
                        help="clip length for the original's every-frame full-resolution mode (slow: ~5 s/frame; "
                             "0: skip)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="the dubs' generator precision, as inf_demo.py's --precision")
    parser.add_argument("--speech_seconds", type=non_negative_float, default=3600,
                        help="speech length dubbed over the first clip, played back and forth (0: skip)")
    parser.add_argument("--uhd_seconds", type=non_negative_float, default=5, help="length of the 3840x2160 clip (0: skip)")
    parser.add_argument("--free_detection", action="store_true",
                        help="also dub the first length with the cascade's boxes at no S3FD cost (the rest of the "
                             "pipeline's ceiling), then with S3FD's cost and those boxes replayed (s3fd_only: what a "
                             "dub with the real weights pays, without the cascade's cost)")
    parser.add_argument("--workdir", default="/tmp/talklip_bench", help="where clips and outputs go")
    parser.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        video, wav, ckpt, s3fd, mode, release, precision = args.worker
        print(json.dumps(worker(video, wav, ckpt, s3fd, mode, release == "1", precision)))
        return
    global PRECISION
    PRECISION = args.precision
    import torch
    from models.talklip import TalkLip
    os.makedirs(args.workdir, exist_ok=True)
    ckpt = os.path.join(args.workdir, "random_talklip.pth")
    if not os.path.exists(ckpt):
        torch.manual_seed(0)
        torch.save({"state_dict": TalkLip().state_dict()}, ckpt)
    s3fd = os.path.join(args.workdir, "random_s3fd_no_face.pth")
    if not os.path.exists(s3fd):
        torch.save(random_s3fd_weights(), s3fd)
    result = {"bench": "dub", "resolution": f"{WIDTH}x{HEIGHT}", "torch": torch.__version__,
              "cpu_threads": torch.get_num_threads(), "default_mode": {}}
    from utils.device import has_native_bf16
    native = has_native_bf16(torch.device("cpu"))
    bf16 = native if args.precision == "auto" else args.precision == "bf16"
    result["cpu_native_bf16"] = native
    result["cpu_generator_frames_per_s_fp32"] = generator_speed_folded()
    result["cpu_generator_frames_per_s_bf16"] = generator_speed_folded(dtype=torch.bfloat16)
    generator = result["cpu_generator_frames_per_s_bf16" if bf16 else "cpu_generator_frames_per_s_fp32"]
    result["cpu_generator_frames_per_s"] = generator
    for seconds in args.lengths:
        video, wav = clip_in(args.workdir, seconds)
        result["default_mode"][f"{seconds:g}s"] = run_worker(video, wav, ckpt, s3fd)
    first_key = f"{args.lengths[0]:g}s"
    first = result["default_mode"][first_key]
    video, wav = clip_in(args.workdir, args.lengths[0])
    unreleased = run_worker(video, wav, ckpt, s3fd, release=False)
    result["memory_release_ab"] = {
        "with": {"frames_per_s": first["frames_per_s"], "peak_rss_mb": first["peak_rss_mb"]},
        "without": {"frames_per_s": unreleased["frames_per_s"], "peak_rss_mb": unreleased["peak_rss_mb"]},
        "time_cost": round(unreleased["frames_per_s"] / first["frames_per_s"] - 1, 3)}
    if args.original_seconds:
        video, wav = clip_in(args.workdir, args.original_seconds)
        result["original_mode"] = run_worker(video, wav, ckpt, s3fd, mode="original")
        result["speedup_default_vs_original"] = round(first["frames_per_s"] / result["original_mode"]["frames_per_s"], 2)
    result["end_to_end_vs_generator"] = round(first["frames_per_s"] / generator["best"], 3)
    if args.free_detection:
        clip = clip_in(args.workdir, args.lengths[0])
        for mode in ("free_detection", "s3fd_only"):      # the second replays the boxes the first recorded
            run = run_worker(*clip, ckpt, s3fd, mode=mode)
            result[mode] = dict(run, vs_generator=round(run["frames_per_s"] / generator["best"], 3))
    if args.speech_seconds:
        video, wav = clip_in(args.workdir, args.lengths[0], speech_s=args.speech_seconds)
        result["long_speech"] = dict(run_worker(video, wav, ckpt, s3fd), speech_s=args.speech_seconds,
                                     video_s=args.lengths[0])
    if args.uhd_seconds:
        video, wav = clip_in(args.workdir, args.uhd_seconds, 3840, 2160)
        result["uhd_3840x2160"] = run_worker(video, wav, ckpt, s3fd)
    result["peak_rss_mb"] = {**{f"720p_{k}": v["peak_rss_mb"] for k, v in result["default_mode"].items()},
                             **({"speech_%gs" % args.speech_seconds: result["long_speech"]["peak_rss_mb"]}
                                if args.speech_seconds else {}),
                             **({"uhd": result["uhd_3840x2160"]["peak_rss_mb"]} if args.uhd_seconds else {})}
    result["time_to_first_frame_s"] = {k: v["time_to_first_frame_s"] for k, v in result["default_mode"].items()}
    if torch.cuda.is_available():
        result["gpu_name"] = torch.cuda.get_device_name(0)
        flops = generator_flops_per_frame()
        peak = next((tflops for name, tflops in GPU_PEAK_TFLOPS.items() if name in result["gpu_name"]), None)
        result["generator_gflops_per_frame"] = round(flops / 1e9, 2)
        for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            speed = generator_speed(torch.device("cuda"), batches=(32, 128, 512), dtype=dtype)
            result[f"gpu_generator_frames_per_s_{name}"] = speed
            if peak:
                result[f"gpu_generator_mfu_{name}"] = round(max(speed.values()) * flops / (peak * 1e12), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
