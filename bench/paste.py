"""How much of the frame a dub keeps: mouth-region paste against the whole face box, on a real photo face.

    python -m bench.paste --ckpt_path runs/quickstart/checkpoints/checkpoint_stepN.pth [--seconds 3] [--crop_png F]

scikit-image's astronaut, its head 640 px tall, drifting and bobbing in a 1280x720 frame, is dubbed by
inf_demo.py with a tone-modulated speech signal (or ``--wav_path``), once per paste mode (default:
``--paste mouth`` with its default region, and ``--paste face``). Against the decoded source, inside the
face box OpenCV's cascade finds on the source frames, it prints one JSON line per mode:
- ``upper_psnr_db``: PSNR of the box's upper half (the eyes, brows and forehead), and on luma alone
  (``upper_psnr_luma_db``); ``--modes passthrough`` measures the source re-encoded unchanged (the
  ceiling: H.264 4:2:0 at crf 18 costs this source ~42.3 dB in BGR);
- ``sharpness_ratio``: variance of the Laplacian of the box (grey), the dub's over the source's;
- ``border_delta_e``: CIE76 colour difference (Lab) between dub and source, averaged over the mask's
  fade band (where the generated region meets the frame's own pixels);
- ``lower_psnr_db``: PSNR of the box's lower half (what the generator redraws; low is expected).
Without ``--ckpt_path`` a random-weight generator (the cpu preset) is used, which checks the pipeline
but says nothing about a trained generator's colours.
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np

from bench.media import random_generator, speech
from dubbing.options import MouthRegion
from dubbing.render import mouth_mask
from face_detection import CascadeDetector
from utils.cli import positive_float
from utils.video import VideoReader, VideoWriter, probe_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def source_clip(path: str, seconds: float, fps: float = 25.0) -> None:
    import skimage.data
    photo = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    head = cv2.resize(photo[0:330, 90:370], (560, 660))          # the face itself is ~400 px wide
    with VideoWriter(path, fps, 1280, 720) as writer:
        for k in range(int(seconds * fps)):
            canvas = np.full((720, 1280, 3), 90, np.uint8)
            x, y = 200 + int(round(2 * k)), 30 + int(round(12 * np.sin(k / 15)))
            canvas[y:y + 660, x:x + 560] = head
            writer.write(canvas)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def largest_face_box(cascade: CascadeDetector, frame: np.ndarray):
    """(x1, y1, x2, y2) ints of the largest face OpenCV's cascade finds in ``frame``, or None."""
    found = cascade.detect_faces(frame[None])[0]
    if len(found) == 0:
        return None
    return tuple(int(v) for v in max(found, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))[:4])


def measure(source_path: str, dub_path: str, region: MouthRegion) -> dict:
    cascade = CascadeDetector()
    upper, upper_y, lower, sharp, delta = [], [], [], [], []
    with VideoReader(source_path) as src, VideoReader(dub_path) as dub:
        for frame, dubbed in zip(src, dub):
            box = largest_face_box(cascade, frame)
            if box is None:
                continue
            x1, y1, x2, y2 = box
            a, b = frame[y1:y2, x1:x2], dubbed[y1:y2, x1:x2]
            half = (y2 - y1) // 2
            upper.append(psnr(a[:half], b[:half]))
            luma = lambda image: cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)[..., 0]
            upper_y.append(psnr(luma(a[:half]), luma(b[:half])))
            lower.append(psnr(a[half:], b[half:]))
            sharp.append(sharpness(b) / max(sharpness(a), 1e-9))
            band = (lambda w: (w > 0) & (w < 1))(mouth_mask(y2 - y1, x2 - x1, region)[..., 0])
            lab_a = cv2.cvtColor(a, cv2.COLOR_BGR2LAB).astype(np.float64)[band]
            lab_b = cv2.cvtColor(b, cv2.COLOR_BGR2LAB).astype(np.float64)[band]
            scale = np.array([100 / 255, 1, 1])                 # OpenCV's 8-bit L is 0..255
            delta.append(float(np.mean(np.linalg.norm((lab_a - lab_b) * scale, axis=1))))
    return {"frames": len(upper), "upper_psnr_db": round(float(np.mean(upper)), 2),
            "upper_psnr_luma_db": round(float(np.mean(upper_y)), 2),
            "lower_psnr_db": round(float(np.mean(lower)), 2), "sharpness_ratio": round(float(np.mean(sharp)), 3),
            "border_delta_e": round(float(np.mean(delta)), 2)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", default=None, help="the generator (default: random weights, cpu preset)")
    parser.add_argument("--wav_path", default=None, help="the speech (default: a modulated tone)")
    parser.add_argument("--seconds", type=positive_float, default=3.0, help="length of the clip")
    parser.add_argument("--modes", nargs="+", default=["mouth", "face"], help="--paste values to measure")
    parser.add_argument("--flags", default="", help="more inf_demo.py flags for every mode (e.g. '--mask_top 0.55')")
    parser.add_argument("--crop_png", default=None,
                        help="also write the face box of the middle frame, source then each mode, side by side (a PNG)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="talklip_paste_") as work:
        clip, wav = os.path.join(work, "astronaut_720p.mp4"), args.wav_path or os.path.join(work, "speech.wav")
        source_clip(clip, args.seconds)
        if not args.wav_path:
            speech(wav, args.seconds, pitch_hz=180.0)
        ckpt = args.ckpt_path or os.path.join(work, "random.pth")
        if not args.ckpt_path:
            random_generator(ckpt)
        extra = args.flags.split()
        region = MouthRegion(*(float(extra[extra.index(f) + 1]) if f in extra else default
                               for f, default in (("--mask_top", MouthRegion.top), ("--mask_side", MouthRegion.side),
                                                  ("--mask_feather", MouthRegion.feather))))
        outputs = {}
        for mode in args.modes:
            out = outputs[mode] = os.path.join(work, f"dub_{mode}.mp4")
            if mode == "passthrough":
                with VideoWriter(out, 25.0, 1280, 720) as writer:
                    for frame in VideoReader(clip):
                        writer.write(frame)
                print(json.dumps({"paste": mode, **measure(clip, out, region)}), flush=True)
                continue
            proc = subprocess.run([sys.executable, os.path.join(ROOT, "inf_demo.py"), "--video_path", clip,
                                   "--wav_path", wav, "--ckpt_path", ckpt, "--save_path", out, "--device", "cpu",
                                   "--no_progress", "--paste", mode, *extra], capture_output=True, text=True,
                                  cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
            if proc.returncode != 0:
                raise SystemExit(f"inf_demo.py failed: {proc.stderr.strip().splitlines()[-1:]}")
            print(json.dumps({"paste": mode, "flags": args.flags, "generator": args.ckpt_path or "random",
                              **measure(clip, out, region)}), flush=True)
        if args.crop_png:
            write_crops(args.crop_png, clip, outputs)


def write_crops(path: str, source_path: str, outputs: dict) -> None:
    """The middle frame's face box (OpenCV's cascade on the source) at its own pixels, labelled: the
    source, then each output."""
    paths = {"source": source_path, **outputs}
    middle = min(probe_video(p).num_frames for p in paths.values()) // 2
    frames = {}
    for name, p in paths.items():             # one frame of each, not whole 720p videos in memory
        with VideoReader(p) as reader:
            frames[name] = next(itertools.islice(reader, middle, None))
    x1, y1, x2, y2 = largest_face_box(CascadeDetector(), frames["source"])
    tiles = []
    for name, frame in frames.items():
        tile = frame[y1:y2, x1:x2].copy()
        label = name if name in ("source", "passthrough") else f"--paste {name}"
        font = cv2.FONT_HERSHEY_SIMPLEX
        scale = min(0.9, 0.9 * (tile.shape[1] - 20) / cv2.getTextSize(label, font, 0.9, 2)[0][0])   # fits the tile
        cv2.putText(tile, label, (10, 30), font, scale, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(tile, label, (10, 30), font, scale, (255, 255, 255), 2, cv2.LINE_AA)
        tiles.append(tile)
    cv2.imwrite(path, np.concatenate(tiles, axis=1))


if __name__ == "__main__":
    main()
