"""Turning a face video and speech into a lip-synced video with a TalkLip generator.

Shared by ``inf_demo.py`` (dubbing) and ``inf_test.py`` (test-set synthesis). Work is done in
chunks of frames: decode, crop, generate, paste back, encode, so memory does not grow with the
clip. Audio features (25 Hz) are mapped to video frames by time, so any frame rate works.
"""
import math
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import cv2
import numpy as np
import torch
from tqdm import tqdm

from face_detection.boxes import crop_face
from models.talklip import FACE_SIZE, TalkLip
from utils.audio import FEATURE_RATE_HZ, audio_visual_align, load_audio, talklip_features
from utils.errors import MediaError
from utils.video import VideoReader, VideoWriter

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STILL_IMAGE_FPS = 25.0


def is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def read_image(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise MediaError(f"image file {path} does not exist: check --video_path")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError(f"cannot decode image {path}: give a JPEG/PNG picture or a video")
    return image


@torch.no_grad()
def encode_audio(generator: TalkLip, feats: np.ndarray, device, max_frames: int = 1500,
                 overlap: int = 150) -> torch.Tensor:
    """Audio-encoder features (T, C) for a whole utterance of (T, 104) features.

    Up to ``max_frames`` (60 s) the transformer sees the whole utterance, as in the original; longer
    audio runs in windows of ``max_frames`` overlapping by ``overlap`` on each side, keeping each
    window's centre, so memory stays bounded."""
    feats_t = torch.from_numpy(np.ascontiguousarray(feats)).float()
    total = feats_t.shape[0]

    def run(a, b):
        out, _ = generator.encode_audio(feats_t[a:b].T[None].to(device))
        return out[:, 0].float().cpu()

    if total <= max_frames:
        return run(0, total)
    step = max_frames - 2 * overlap
    if step <= 0:
        raise ValueError("max_frames must exceed twice the overlap")
    pieces = []
    for keep_start in range(0, total, step):
        keep_end = min(total, keep_start + step)
        win_start = max(0, keep_start - overlap)
        win_end = min(total, max(keep_end + overlap, win_start + max_frames))
        win_start = max(0, min(win_start, win_end - max_frames))
        out = run(win_start, win_end)
        pieces.append(out[keep_start - win_start: keep_end - win_start])
    return torch.cat(pieces)


def frame_feature_rows(num_frames: int, fps: float, num_feats: int) -> np.ndarray:
    """Row of the 25 Hz audio features that plays at each video frame's time."""
    rows = np.floor(np.arange(num_frames) * FEATURE_RATE_HZ / fps + 1e-6).astype(np.int64)
    return np.minimum(rows, num_feats - 1)


def ping_pong(num_out: int, num_in: int) -> np.ndarray:
    """Source frame for each output frame: forward, then backward, then forward... (0 for stills)."""
    if num_in <= 1:
        return np.zeros(num_out, dtype=np.int64)
    period = 2 * (num_in - 1)
    phase = np.arange(num_out) % period
    return np.where(phase < num_in, phase, period - phase)


class FrameFetcher:
    """Frames by source index from a video (sequential reads; a seek only when going back) or a
    still image. Holds at most one chunk of decoded frames."""

    def __init__(self, path: str):
        self.path = path
        self.image = read_image(path) if is_image(path) else None
        self.cap = None
        self.next_index = 0
        if self.image is None:
            self.reader = VideoReader(path)
            self.cap = self.reader._cap

    def get(self, indices: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 BGR frames at ``indices`` (a contiguous run, any order)."""
        if self.image is not None:
            return np.repeat(self.image[None], len(indices), axis=0)
        lo, hi = int(indices.min()), int(indices.max())
        if lo != self.next_index:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, lo)
        block = None
        for offset in range(hi - lo + 1):
            ok, frame = self.cap.read()
            if not ok:
                raise MediaError(f"cannot decode frame {lo + offset} of {self.path}: the video is damaged; "
                                 f"re-encode it")
            if block is None:
                block = np.empty((hi - lo + 1,) + frame.shape, np.uint8)
            block[offset] = frame
        self.next_index = hi + 1
        if np.array_equal(indices, np.arange(lo, hi + 1)):
            return block
        return block[indices - lo]

    def close(self):
        if self.cap is not None:
            self.cap.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def face_inputs(target_crops: np.ndarray, reference_crops: np.ndarray) -> torch.Tensor:
    """(N, 96, 96, 3) uint8 target and reference crops -> (N, 6, 96, 96) float in [0, 1] with the
    lower half of the target zeroed, as the generator expects."""
    target = torch.from_numpy(target_crops).float().permute(0, 3, 1, 2) / 255.0
    reference = torch.from_numpy(reference_crops).float().permute(0, 3, 1, 2) / 255.0
    target[:, :, FACE_SIZE // 2:] = 0.0
    return torch.cat([target, reference], dim=1)


def blend_mask(height: int, width: int, feather: int) -> np.ndarray:
    """(h, w, 1) weights: 1 inside, ramping linearly to 0 over ``feather`` pixels at the edges."""
    if feather <= 0:
        return np.ones((height, width, 1), np.float32)
    ramp = lambda n: np.clip(np.minimum(np.arange(n) + 1, n - np.arange(n)) / float(feather), 0, 1)
    return (np.outer(ramp(height), ramp(width))[..., None]).astype(np.float32)


def paste_faces(frames: np.ndarray, boxes: np.ndarray, faces: np.ndarray, feather: int = 0,
                in_place: bool = False) -> np.ndarray:
    """Write generated faces (N, 96, 96, 3) uint8 into frames inside their boxes (clipped to the
    frame), into copies unless ``in_place``; with ``feather`` the face fades into the original
    over that many pixels."""
    out = frames if in_place else frames.copy()
    height, width = frames.shape[1:3]
    for frame, box, face in zip(out, boxes, faces):
        x1, y1, x2, y2 = (int(v) for v in box)
        x1, x2 = max(0, x1), min(width, x2)
        y1, y2 = max(0, y1), min(height, y2)
        if x2 <= x1 or y2 <= y1:
            continue
        resized = cv2.resize(face, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        if feather > 0:
            weight = blend_mask(y2 - y1, x2 - x1, feather)
            region = frame[y1:y2, x1:x2].astype(np.float32)
            resized = np.clip(np.round(weight * resized + (1 - weight) * region), 0, 255).astype(np.uint8)
        frame[y1:y2, x1:x2] = resized
    return out


@torch.no_grad()
def render_faces(generator: TalkLip, inputs: torch.Tensor, audio_emb: torch.Tensor, device,
                 batch_size: int = 32, dtype: Optional[torch.dtype] = None) -> np.ndarray:
    """Generated faces for (N, 6, 96, 96) inputs and (N, C) audio features: (N, 96, 96, 3) uint8."""
    out = []
    autocast = torch.autocast(torch.device(device).type, dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
    for start in range(0, len(inputs), batch_size):
        with autocast:
            faces = generator.render(inputs[start:start + batch_size].to(device),
                                     audio_emb[start:start + batch_size].to(device))
        out.append((faces.float().clamp(0, 1) * 255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)


@dataclass
class SynthesisOptions:
    batch_size: int = 32          # faces per generator batch
    chunk_frames: int = 64        # frames decoded / pasted / encoded at a time
    feather: int = 0              # blend width in pixels (0: paste the face box as the original)
    audio_window: int = 1500      # audio frames (25 Hz) the transformer sees at once
    device: str = "cpu"
    dtype: Optional[torch.dtype] = None   # e.g. torch.bfloat16 on GPU
    progress: bool = True


def synthesize_frames(generator: TalkLip, source: FrameFetcher, boxes: np.ndarray, source_index: np.ndarray,
                      audio_rows: np.ndarray, audio_emb: torch.Tensor, opts: SynthesisOptions,
                      reference_index: Optional[int] = None, desc: str = "generate") -> Iterator[np.ndarray]:
    """Yield output frames chunk by chunk. Output frame k shows source frame ``source_index[k]``
    with the mouth driven by audio-encoder row ``audio_rows[k]``. The reference face is the frame
    itself (as the original demo), or source frame ``reference_index`` for every frame."""
    reference = None
    if reference_index is not None:
        reference = crop_face(source.get(np.array([reference_index]))[0], boxes[reference_index], FACE_SIZE)
    bar = tqdm(total=len(source_index), desc=desc, unit="frame", disable=not opts.progress)
    for start in range(0, len(source_index), opts.chunk_frames):
        idx = source_index[start:start + opts.chunk_frames]
        frames = source.get(idx)
        crops = np.stack([crop_face(f, b, FACE_SIZE) for f, b in zip(frames, boxes[idx])])
        refs = crops if reference is None else np.repeat(reference[None], len(crops), axis=0)
        emb = audio_emb[torch.from_numpy(audio_rows[start:start + opts.chunk_frames])]
        faces = render_faces(generator, face_inputs(crops, refs), emb, opts.device, opts.batch_size, opts.dtype)
        yield paste_faces(frames, boxes[idx], faces, opts.feather, in_place=True)
        bar.update(len(idx))
    bar.close()


def dub(generator: TalkLip, video_path: str, audio_path: str, out_path: str, detector,
        opts: SynthesisOptions, smooth_window: int = 1) -> dict:
    """Dub ``video_path`` (or a still image) with the speech in ``audio_path`` into ``out_path``.

    The output has the input's frame rate and size, lasts as long as the audio (the video plays
    forward and backward when the audio is longer), and carries the audio as AAC."""
    from face_detection.boxes import detect_video, fill_missing_boxes, smooth_boxes
    wav = load_audio(audio_path)
    if is_image(video_path):
        image = read_image(video_path)
        boxes = fill_missing_boxes(detector.detect_batch(image[None]), source=video_path)
        fps, height, width = STILL_IMAGE_FPS, image.shape[0], image.shape[1]
    else:
        with VideoReader(video_path) as reader:
            fps, height, width = reader.fps, reader.height, reader.width
        boxes = detect_video(detector, video_path, batch_size=opts.batch_size, progress=opts.progress)
        boxes = smooth_boxes(boxes, smooth_window)
    feats = talklip_features(wav, 16000)
    audio_emb = encode_audio(generator, feats, opts.device, max_frames=opts.audio_window)
    duration = len(wav) / 16000.0
    num_out = max(1, int(round(duration * fps)))
    source_index = ping_pong(num_out, len(boxes))
    audio_rows = frame_feature_rows(num_out, fps, len(audio_emb))
    with FrameFetcher(video_path) as source, \
            VideoWriter(out_path, fps, width, height, audio_path=audio_path) as writer:
        for frames in synthesize_frames(generator, source, boxes, source_index, audio_rows, audio_emb, opts,
                                        desc="dub"):
            writer.write_batch(frames)
    return {"frames": num_out, "fps": fps, "duration_s": duration, "source_frames": len(boxes)}


def synthesize_test_clip(generator: TalkLip, video_path: str, wav_path: str, boxes: np.ndarray,
                         out_path: str, opts: SynthesisOptions) -> dict:
    """The paper's test protocol for one clip: every frame regenerated from its own upper half and
    the first frame as reference, audio aligned to the video by cutting the excess evenly from
    both ends (or padding silence), output at the input frame rate with the clip's audio."""
    with VideoReader(video_path) as reader:
        fps, height, width, declared = reader.fps, reader.height, reader.width, reader.num_frames
    if len(boxes) != declared:
        raise MediaError(f"{video_path} has {declared} frames but its boxes file has {len(boxes)}: "
                         f"rerun preprocessing (bbx_extract) for this clip")
    wav = load_audio(wav_path)
    feats = talklip_features(wav, 16000)
    feats = audio_visual_align(feats, max(1, int(round(declared * FEATURE_RATE_HZ / fps))), mode="center")
    audio_emb = encode_audio(generator, feats, opts.device, max_frames=opts.audio_window)
    audio_rows = frame_feature_rows(declared, fps, len(audio_emb))
    with FrameFetcher(video_path) as source, \
            VideoWriter(out_path, fps, width, height, audio_path=wav_path) as writer:
        for frames in synthesize_frames(generator, source, boxes, np.arange(declared), audio_rows, audio_emb,
                                        opts, reference_index=0, desc=os.path.basename(out_path)):
            writer.write_batch(frames)
    return {"frames": declared, "fps": fps}
