"""Turning a face video and speech into a lip-synced video with a TalkLip generator.

Shared by ``inf_demo.py`` (dubbing) and ``inf_test.py`` (test-set synthesis). Work is done in
chunks of frames: decode, crop, generate, paste back, encode, so memory does not grow with the
clip. Audio features (25 Hz) are mapped to video frames by time, so any frame rate works.
"""
import itertools
import os
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from face_detection.boxes import crop_face
from face_detection.tracking import KeyFrameDetector, TrackingOptions, no_face, track_faces
from models.talklip import FACE_SIZE, TalkLip
from utils.audio import FEATURE_RATE_HZ, AUDIO_RATE_HZ, audio_visual_align, load_audio, talklip_features
from utils.errors import MediaError
from utils.pipeline import BackgroundWriter, StageClock, in_background, map_large_buffers, release_free_memory
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


AUDIO_WINDOW_OVERLAP = 150     # audio frames each side of a window that are run but not kept (6 s)


@torch.no_grad()
def encode_audio(generator: TalkLip, feats: np.ndarray, device, max_frames: int = 1500,
                 overlap: int = AUDIO_WINDOW_OVERLAP) -> torch.Tensor:
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
        raise ValueError(f"max_frames ({max_frames}) must exceed twice the overlap ({overlap})")
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
    """Frames of a video by index, for the backward and forward replays when the speech outlasts
    the video: sequential reads, a seek only when going back; holds at most one chunk."""

    def __init__(self, path: str):
        self.path = path
        self.reader = VideoReader(path)
        self.cap = self.reader._cap
        self.next_index = 0

    def get(self, indices: np.ndarray) -> np.ndarray:
        """(n, H, W, 3) uint8 BGR frames at ``indices`` (a contiguous run, any order)."""
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


@torch.inference_mode()
def render_faces(generator: TalkLip, inputs: torch.Tensor, audio_emb: torch.Tensor, device,
                 batch_size: int = 32, dtype: Optional[torch.dtype] = None) -> np.ndarray:
    """Generated faces for (N, 6, 96, 96) inputs and (N, C) audio features: (N, 96, 96, 3) uint8."""
    out = []
    autocast = torch.autocast(torch.device(device).type, dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
    for start in range(0, len(inputs), batch_size):
        faces_in = inputs[start:start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        with autocast:
            faces = generator.render(faces_in, audio_emb[start:start + batch_size].to(device))
        out.append((faces.float().clamp(0, 1) * 255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)


@dataclass
class SynthesisOptions:
    batch_size: int = 32          # faces per generator batch
    chunk_frames: int = 32        # frames cropped / generated / pasted / handed to the encoder at a time
    feather: int = 0              # blend width in pixels (0: paste the face box as the original)
    audio_window: int = 1500      # audio frames (25 Hz) the transformer sees at once
    device: str = "cpu"
    dtype: Optional[torch.dtype] = None   # e.g. torch.bfloat16 on GPU
    progress: bool = True
    read_ahead: int = 8           # decoded frames waiting for the model


def render_into(out, generator: TalkLip, items: Iterable[Tuple[np.ndarray, Optional[np.ndarray], int]],
                audio_emb: torch.Tensor, opts: SynthesisOptions, clock: StageClock,
                reference: Optional[np.ndarray] = None, bar=None) -> int:
    """Write ``items`` (frame, face box or None, audio-encoder row), in output order, to ``out``
    (``write_batch``): a frame with a box gets the generated face pasted in; a frame without one
    passes through untouched. The reference face is the frame's own crop (as the original demo) or
    ``reference`` (96x96) for every frame. Returns the number of frames that got a face."""
    faced = 0
    chunk = []

    def flush():
        nonlocal faced
        started = time.perf_counter()
        frames = [frame for frame, _, _ in chunk]
        with_face = [k for k, (_, box, _) in enumerate(chunk) if box is not None]
        if with_face:
            boxes = np.stack([chunk[k][1] for k in with_face])
            crops = np.stack([crop_face(frames[k], box, FACE_SIZE) for k, box in zip(with_face, boxes)])
            refs = crops if reference is None else np.repeat(reference[None], len(crops), axis=0)
            emb = audio_emb[torch.from_numpy(np.array([chunk[k][2] for k in with_face]))]
            inputs = face_inputs(crops, refs)
            clock.add("crop", time.perf_counter() - started)
            started = time.perf_counter()
            faces = render_faces(generator, inputs, emb, opts.device, opts.batch_size, opts.dtype)
            clock.add("generate", time.perf_counter() - started)
            started = time.perf_counter()
            for k, box, face in zip(with_face, boxes, faces):
                paste_faces(frames[k][None], box[None], face[None], opts.feather, in_place=True)
            clock.add("paste", time.perf_counter() - started)
            faced += len(with_face)
        out.write_batch(frames)
        if bar is not None:
            bar.update(len(frames))
        chunk.clear()
        release_free_memory()

    for item in items:
        chunk.append(item)
        if len(chunk) == opts.chunk_frames:
            flush()
    if chunk:
        flush()
    return faced


def _source(video_path: str):
    """(reader or None, frames for one forward pass, fps, width, height). A video's frames come at its
    average frame rate, placed by their timestamps (VideoReader.resampled)."""
    if is_image(video_path):
        image = read_image(video_path)
        return None, iter([image.copy()]), STILL_IMAGE_FPS, image.shape[1], image.shape[0]
    reader = VideoReader(video_path, allow_truncated=True)
    return reader, reader.resampled(), reader.fps, reader.width, reader.height


def dub(generator: TalkLip, video_path: str, audio_path: str, out_path: str, detector,
        opts: SynthesisOptions, tracking: Optional[TrackingOptions] = None, strict: bool = False) -> dict:
    """Dub ``video_path`` (or a still image) with the speech in ``audio_path`` into ``out_path``.

    One pass: frames are decoded (in a thread), their faces found on key frames and followed
    (``tracking``), generated and pasted in chunks, and encoded (in a thread) as they come. The output
    has the input's frame rate and size and lasts as long as the audio: when the audio is longer the
    video plays forward and backward (those frames are decoded again; their boxes are kept). Frames
    where the face is missing for longer than ``tracking.max_gap_s`` pass through untouched. The
    decoded frames are the video (``source_frames`` in the result); ``damaged`` says they stopped before
    the video stream's declared end (``VideoReader.truncated``), and with ``strict`` that is an error and
    nothing is written. Memory stays flat in the clip's length (``map_large_buffers``)."""
    tracking = tracking or TrackingOptions()
    map_large_buffers()
    clock = StageClock()
    wav = load_audio(audio_path)
    started = time.perf_counter()
    audio_emb = encode_audio(generator, talklip_features(wav, AUDIO_RATE_HZ), opts.device, max_frames=opts.audio_window)
    clock.add("audio", time.perf_counter() - started)
    duration = len(wav) / AUDIO_RATE_HZ
    reader, frames, fps, width, height = _source(video_path)
    num_out = max(1, int(round(duration * fps)))
    rows = frame_feature_rows(num_out, fps, len(audio_emb))
    boxes: List[Optional[np.ndarray]] = []
    bar = tqdm(total=num_out, desc="dub", unit="frame", disable=not opts.progress)
    with VideoWriter(out_path, fps, width, height, audio_path=audio_path) as writer, \
            BackgroundWriter(writer, maxsize=1, clock=clock) as out:
        stream = in_background(clock.timed("decode", itertools.islice(frames, num_out)), opts.read_ahead,
                               name="decoder")
        detect = KeyFrameDetector(detector, tracking.detect_max_side, clock)

        first = []                        # frame 0, kept for a one-frame source (a still, a 1-frame video)

        def forward():
            for index, frame, box in track_faces(stream, detect, tracking, fps):
                if index == 0:
                    first.append(frame.copy())
                boxes.append(box)
                yield frame, box, rows[index]

        faced = render_into(out, generator, forward(), audio_emb, opts, clock, bar=bar)
        source_frames = len(boxes)
        if source_frames < num_out:
            order = ping_pong(num_out, source_frames)

            def replay():
                if source_frames == 1:
                    for k in range(1, num_out):
                        yield first[0].copy(), boxes[0], rows[k]
                    return
                decoded_index = np.asarray(reader.source_index)
                with FrameFetcher(video_path) as fetch:
                    for start in range(source_frames, num_out, opts.chunk_frames):
                        index = order[start:start + opts.chunk_frames]
                        for k, (i, frame) in enumerate(zip(index, fetch.get(decoded_index[index]))):
                            yield frame, boxes[i], rows[start + k]

            faced += render_into(out, generator, replay(), audio_emb, opts, clock, bar=bar)
        decoded = reader.decoded if reader is not None else source_frames
        damaged = reader is not None and reader.truncated      # it ran out before the speech did
        if strict and damaged:
            raise reader.truncation_error()
        if not any(box is not None for box in boxes):
            raise no_face(video_path)
    bar.close()
    return {"frames": num_out, "fps": fps, "duration_s": duration, "source_frames": source_frames,
            "declared_s": reader.info.duration_s if reader is not None else None, "decoded_frames": decoded, "damaged": damaged, "frames_with_face": faced, "detected_frames": detect.calls,
            "seconds": clock.report()}


def synthesize_test_clip(generator: TalkLip, video_path: str, wav_path: str, boxes: np.ndarray,
                         out_path: str, opts: SynthesisOptions) -> dict:
    """The paper's test protocol for one clip: every frame regenerated from its own upper half and
    the first frame as reference, audio aligned to the video by cutting the excess evenly from
    both ends (or padding silence), output at the input frame rate with the clip's audio.
    The frames are those that decode (one per face box); a video whose frames stop before its video
    stream's declared end is reported as damaged (``VideoReader``), and nothing is written."""
    clock = StageClock()
    reader = VideoReader(video_path)
    fps, height, width = reader.fps, reader.height, reader.width
    count = len(boxes)                 # the frames bbx_extract decoded
    wav = load_audio(wav_path)
    feats = talklip_features(wav, AUDIO_RATE_HZ)
    feats = audio_visual_align(feats, max(1, int(round(count * FEATURE_RATE_HZ / fps))), mode="center")
    audio_emb = encode_audio(generator, feats, opts.device, max_frames=opts.audio_window)
    rows = frame_feature_rows(count, fps, len(audio_emb))
    bar = tqdm(total=count, desc=os.path.basename(out_path), unit="frame", disable=not opts.progress)
    decoded = [0]

    def counted(frames):
        for frame in frames:
            decoded[0] += 1
            if decoded[0] <= count:
                yield frame

    with VideoWriter(out_path, fps, width, height, audio_path=wav_path) as writer, \
            BackgroundWriter(writer, maxsize=1, clock=clock) as out:
        frames = counted(in_background(clock.timed("decode", reader), opts.read_ahead, name="decoder"))
        first = next(frames)
        reference = crop_face(first, boxes[0], FACE_SIZE)
        items = zip(itertools.chain([first], frames), boxes, rows)
        render_into(out, generator, items, audio_emb, opts, clock, reference=reference, bar=bar)
        for _ in frames:               # count the rest (a damaged file raises at its end)
            pass
        if decoded[0] != count:
            raise MediaError(f"{video_path} decodes to {decoded[0]} frames but its boxes file has {count}: "
                             f"rerun preprocessing (bbx_extract) for this clip")
    bar.close()
    return {"frames": count, "fps": fps, "seconds": clock.report()}
