"""Small faces in a 4K frame, found by the fallback cascade: real clips shrunk into a 4K scene, and pictures without
a face.

    python -m bench.small_faces --videos '../shared/data/lrs2_samples/main/demo/*.mp4' --face_px 60 100 140

For each clip and face size, the clip is shrunk so that its face (the cascade's median box on the clip at its own
size) is that many pixels wide, pasted into scikit-image's coffee picture at 3840 x 2160, and followed by the
tracker the dub and the preprocessing use (default options): one JSON line per clip and size with the frames, those
given a box, those whose box's centre lies on the pasted clip, the frames searched at full size (``probes``) and
the seconds.
A last line counts, on 17 pictures of scikit-image without a face (at 3840 x 2160 and 1920 x 1080), the first
cascade's candidates of 24-400 px and those ``CascadeDetector.confirm_face`` keeps.
"""
import argparse
import glob
import json
import os
import time

import cv2
import numpy as np
import skimage.data

from face_detection import CascadeDetector
from face_detection.tracking import KeyFrameDetector, TrackingOptions, track_faces
from utils.cli import int_at_least
from utils.errors import TalkLipError, run_cli
from utils.video import VideoReader

FACELESS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "horse", "page", "text",
            "retina", "brick", "grass", "gravel", "cat", "logo", "coins", "moon", "clock")


def scene(size=(3840, 2160)) -> np.ndarray:
    return cv2.resize(np.ascontiguousarray(skimage.data.coffee()[..., ::-1]), size)


def face_width(path: str) -> float:
    """The median width of the cascade's box over the clip's frames, at its own size."""
    detector, widths = CascadeDetector(), []
    with VideoReader(path) as reader:
        for frame in reader:
            faces = detector.detect_faces(frame[None])[0]
            if len(faces):
                widths.append(faces[0, 2] - faces[0, 0])
    if not widths:
        raise TalkLipError(f"{path}: the cascade finds no face at the clip's own size; give clips of a frontal face")
    return float(np.median(widths))


def follow(path: str, face_px: int, width: float) -> dict:
    background, scale = scene(), face_px / width
    top_left = (1200, 1500)
    with VideoReader(path) as reader:
        frames = list(reader)
    tile_size = (round(frames[0].shape[1] * scale), round(frames[0].shape[0] * scale))
    x, y = top_left

    def pasted():
        for frame in frames:
            canvas = background.copy()
            canvas[y:y + tile_size[1], x:x + tile_size[0]] = cv2.resize(frame, tile_size, interpolation=cv2.INTER_AREA)
            yield canvas

    detect = KeyFrameDetector(CascadeDetector(), TrackingOptions().detect_max_side)
    started = time.perf_counter()
    boxes = [face.box for face in track_faces(pasted(), detect, TrackingOptions(), reader.fps)]
    seconds = time.perf_counter() - started
    found = [box for box in boxes if box is not None]
    on_clip = sum(x <= (box[0] + box[2]) / 2 <= x + tile_size[0] and y <= (box[1] + box[3]) / 2 <= y + tile_size[1]
                  for box in found)          # the box's centre on the pasted clip
    return {"bench": "small_faces", "clip": os.path.basename(path), "face_px": face_px, "frames": len(boxes),
            "boxed": len(found), "on_clip": int(on_clip), "probes": detect.probes, "seconds": round(seconds, 1)}


def faceless() -> dict:
    detector, candidates, kept = CascadeDetector(), 0, 0
    for name in FACELESS:
        picture = getattr(skimage.data, name)()
        picture = np.stack([picture] * 3, -1) if picture.ndim == 2 else picture[..., :3]
        picture = np.ascontiguousarray(picture[..., ::-1]).astype(np.uint8)
        for size in ((3840, 2160), (1920, 1080)):
            frame = cv2.resize(picture, size)
            for box in detector.find_small_faces(frame, 400, confirm=False):
                candidates += 1
                kept += detector.confirm_face(frame, box)
    return {"bench": "small_faces", "faceless_pictures": len(FACELESS), "sizes": ["3840x2160", "1920x1080"],
            "candidates": candidates, "confirmed": int(kept)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", required=True, help="a glob of face videos (quote it)")
    parser.add_argument("--face_px", type=int_at_least(24, " (the cascade's smallest face)"), nargs="+",
                        default=[60, 100, 140], help="face widths in the 4K frame (pixels, 24 or more)")
    return parser.parse_args(argv)


def main(args) -> int:
    paths = sorted(glob.glob(args.videos))
    if not paths:
        raise TalkLipError(f"no video matches --videos {args.videos}: give a glob of face videos, quoted")
    for path in paths:
        width = face_width(path)
        for face_px in args.face_px:
            print(json.dumps(follow(path, face_px, width)), flush=True)
    print(json.dumps(faceless()), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
