"""A dub of a real GRID clip, made at its own 360 x 288 by ``inf_demo.py``, read as the prepared copies are read.

GRID's single speaker gives a dub a ground truth: clip A's face driven by held-out sentence B's speech should
move as B's real video moves. The readers and the mouth measure read ``preparation.grid``'s 160 x 160
mouth-centred copies, so the dub is framed the same way first: output frame k shows source frame
``ping_pong(k)`` of A (the dub plays A forward, then backward, as long as B's speech), and is cut with A's window
for that frame. This writes:

- ``<out_dir>/framed/<B>.mp4``: the dub framed as a copy, named after the speech that drove it, so that the
  observer's WER against B's transcript is ``evaluation.avhubert_wer --video_root <out_dir>/framed`` on ``<B>``;
- ``<out_dir>/mouth_sync_dubbed.json``: the mouth sync of the framed dub against B's real video (high-passed,
  ``evaluation.mouth_sync``'s real-video reading);
- ``<out_dir>/dub_strip.mp4``: side by side, with B's speech: A's source frames as the dub plays them | the dub |
  B's real mouth (its copy), each at the dub's height.

    python -m evaluation.grid_dub --dub DUB.mp4 --data_root data/grid --face s1/A --speech s1/B --out_dir R
"""
import argparse
import json
import os

import numpy as np

from evaluation.mouth_sync import dub_mouth_sync, load_ground_truth
from preparation.grid import FRAME_SIZE, frame_copy
from utils.errors import MediaError, run_cli
from utils.fileio import atomic_output
from utils.timeline import ping_pong
from utils.video import VideoReader, VideoWriter

LABEL_HEIGHT = 22


def _label(image: np.ndarray, text: str) -> np.ndarray:
    import cv2
    bar = np.full((LABEL_HEIGHT, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
    import cv2
    if image.shape[0] == height:
        return image
    return cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height), interpolation=cv2.INTER_AREA)


def clip_source(data_root: str, face: str):
    """(each frame's window in the source, the source video's path) of a prepared clip, the video checked to exist."""
    face_gt_path = os.path.join(data_root, "gt", f"{face}.npz")
    with np.load(face_gt_path) as data:
        if "window" not in data.files or "source" not in data.files:
            raise MediaError(f"{face_gt_path} is not a prepared GRID clip's gt (no window/source): prepare the folder "
                             f"with python -m preparation.grid")
        windows, source = data["window"], str(data["source"])
    if not os.path.isfile(source):
        raise MediaError(f"{face}'s source video {source} (recorded by preparation.grid) is gone: prepare the "
                         f"folder again from the GRID folder")
    return windows, source


def frame_dub(dub: str, data_root: str, face: str, speech: str, out_dir: str) -> dict:
    """Write the framed dub, the strip and the mouth sync (module docstring); return the mouth sync."""
    face_gt_path, speech_gt_path = (os.path.join(data_root, "gt", f"{n}.npz") for n in (face, speech))
    face_gt, speech_gt = load_ground_truth(face_gt_path, real=True), load_ground_truth(speech_gt_path, real=True)
    windows, source = clip_source(data_root, face)
    speech_video = os.path.join(data_root, "main", f"{speech}.mp4")
    with VideoReader(source) as reader:
        source_frames = list(reader)
    with VideoReader(speech_video) as reader:
        speech_frames = list(reader)
    with VideoReader(dub) as reader:
        fps, width, height = reader.fps, reader.width, reader.height
        dub_frames = list(reader)
    if (width, height) != (source_frames[0].shape[1], source_frames[0].shape[0]):
        raise MediaError(f"{dub} is {width}x{height}, {face}'s source {source} is "
                         f"{source_frames[0].shape[1]}x{source_frames[0].shape[0]}: dub the source video itself")
    shown = ping_pong(len(dub_frames), len(windows))
    framed = os.path.join(out_dir, "framed", f"{speech}.mp4")
    with VideoWriter(framed, fps, FRAME_SIZE, FRAME_SIZE, audio_path=dub) as writer:
        for frame, k in zip(dub_frames, shown):
            writer.write(frame_copy(frame, windows[k]))
    def strip(i: int, frame: np.ndarray, k: int) -> np.ndarray:
        real = speech_frames[min(i, len(speech_frames) - 1)]
        panel = np.concatenate([_label(source_frames[min(k, len(source_frames) - 1)], f"source {face}"),
                                _label(frame, f"dub: {speech}'s speech"),
                                _label(_fit_height(real, height), f"{speech}, real")], axis=1)
        return panel[:panel.shape[0] // 2 * 2, :panel.shape[1] // 2 * 2]
    first = strip(0, dub_frames[0], shown[0])
    with VideoWriter(os.path.join(out_dir, "dub_strip.mp4"), fps, first.shape[1], first.shape[0],
                     audio_path=dub) as writer:
        for i, (frame, k) in enumerate(zip(dub_frames, shown)):
            writer.write(strip(i, frame, k))
    result = dub_mouth_sync(framed, face_gt, speech_gt, speech_video=speech_video)
    result.update(face_clip=face, speech_clip=speech, framed=framed)
    with atomic_output(os.path.join(out_dir, "mouth_sync_dubbed.json")) as tmp, open(tmp, "w") as handle:
        json.dump(result, handle)
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dub", required=True, help="inf_demo.py's dub of a GRID clip's source video")
    parser.add_argument("--data_root", required=True, help="the folder preparation.grid wrote")
    parser.add_argument("--face", required=True, help="the dubbed clip (<speaker>/<id>)")
    parser.add_argument("--speech", required=True, help="the clip whose speech drove the dub (<speaker>/<id>)")
    parser.add_argument("--out_dir", required=True, help="where the framed dub, the strip and the json go")
    return parser.parse_args(argv)


def main(args) -> int:
    result = frame_dub(args.dub, args.data_root, args.face, args.speech, args.out_dir)
    print(f"dub of {args.face} with {args.speech}'s speech: mouth sync r {result['r']:.3f} over {result['frames']} "
          f"frames against {args.speech}'s real video; framed copy {result['framed']}")
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
