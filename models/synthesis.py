"""Turning a face video and speech into a lip-synced video with a TalkLip generator.

Shared by ``inf_demo.py`` (dubbing) and ``inf_test.py`` (test-set synthesis). Work is done in
chunks of frames: decode, crop, generate, paste back, encode, so memory does not grow with the
clip. Audio features (25 Hz) are mapped to video frames by time, so any frame rate works.
"""
import itertools
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from face_detection.boxes import crop_face
from face_detection.tracking import FaceTracker, KeyFrameDetector, TrackingOptions, check_follow_point, no_face
from models.talklip import FACE_SIZE, TalkLip
from utils.audio import (FEATURE_RATE_HZ, AUDIO_RATE_HZ, SpeechSamples, audio_visual_align, feature_count,
                         load_audio, talklip_feature_rows, talklip_features)
from utils.errors import MediaError, say_on_stderr
from utils.memory import released_after_use
from utils.pipeline import BackgroundWriter, StageClock, in_background, release_free_memory
from utils.video import (FrameSeeker, SourceFrame, VideoReader, VideoWriter, colour_conversion, convert_video_stream,
                         keep_video_stream, real_video_stream)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STILL_IMAGE_FPS = 25.0


def is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


# H.264's largest frame (level 6.2, the highest: 139264 macroblocks of 16 x 16, e.g. 8192 x 4320); players
# refuse a stream beyond it.
H264_MAX_MACROBLOCKS = 139264


def h264_fit(width: int, height: int) -> float:
    """The scale (<= 1) at which a width x height frame fits in H.264's largest frame."""
    blocks = -(-width // 16) * -(-height // 16)
    if blocks <= H264_MAX_MACROBLOCKS:
        return 1.0
    scale = (H264_MAX_MACROBLOCKS / blocks) ** 0.5
    while -(-int(width * scale) // 16) * -(-int(height * scale) // 16) > H264_MAX_MACROBLOCKS:
        scale *= 0.995
    return scale


def read_image(path: str, say=None) -> np.ndarray:
    """A still as BGR uint8; one larger than H.264 can carry is decoded reduced (OpenCV's 1/2, 1/4 or 1/8
    decoding where it fits) and scaled down to fit, said once through ``say`` (default stderr)."""
    if not os.path.isfile(path):
        raise MediaError(f"image file {path} does not exist: check --video_path")
    try:
        from PIL import Image
        with Image.open(path) as header:          # the size from the header, before decoding
            width, height = header.size
    except Exception:
        width = height = 0
    scale = h264_fit(width, height) if width and height else 1.0
    flag = cv2.IMREAD_COLOR
    for reduced, factor in ((cv2.IMREAD_REDUCED_COLOR_8, 8), (cv2.IMREAD_REDUCED_COLOR_4, 4),
                            (cv2.IMREAD_REDUCED_COLOR_2, 2)):
        if scale <= 1.0 / factor:
            flag = reduced
            break
    image = cv2.imread(path, flag)
    if image is None:
        raise MediaError(f"cannot decode image {path}: give a JPEG/PNG picture or a video")
    if not width:                                  # no header read: the decoded size decides
        height, width = image.shape[:2]
        scale = h264_fit(width, height)
    if scale < 1.0:
        size = (int(width * scale) // 2 * 2, int(height * scale) // 2 * 2)
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        (say or say_on_stderr)(f"note: {path} is {width}x{height}, larger than an H.264 video can be; it is dubbed "
                         f"at {size[0]}x{size[1]}")
    return image



AUDIO_WINDOW_OVERLAP = 150     # audio frames each side of a window that are run but not kept (6 s)
SPILL_BYTES = 4 << 30          # a video replayed back and forth is kept on disk up to this size (24 s at 1080p)
TRIM_EVERY_FRAMES = 32        # the heap is trimmed after this many frames (after every 4-frame chunk cost ~10-15%)
CHUNK_BYTES = 12 << 20         # frames in one chunk at most (4 at 720p, 1 at 4K); up to ~4 chunks are in flight


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
        win_start, win_end = audio_window(keep_start, keep_end, total, max_frames, overlap)
        out = run(win_start, win_end)
        pieces.append(out[keep_start - win_start: keep_end - win_start])
    return torch.cat(pieces)


def audio_window(keep_start: int, keep_end: int, total: int, max_frames: int, overlap: int) -> Tuple[int, int]:
    """[start, end) of the rows the encoder runs to give rows [keep_start, keep_end) of ``total``:
    ``overlap`` rows each side where there are some, ``max_frames`` rows in all where the
    utterance has them (the whole utterance when it is no longer)."""
    if total <= max_frames:
        return 0, total
    start = max(0, keep_start - overlap)
    end = min(total, max(keep_end + overlap, start + max_frames))
    return max(0, min(start, end - max_frames)), end


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
    batch_size: int = 4           # faces per generator batch (on 2 CPU cores 4-8 ran faster than 32, with 1/3-1/6 of the memory)
    chunk_frames: int = 32        # frames cropped / generated / pasted / handed to the encoder at a time
    feather: int = 0              # blend width in pixels (0: paste the face box as the original)
    audio_window: int = 1500      # audio frames (25 Hz) the transformer sees at once
    device: str = "cpu"
    dtype: Optional[torch.dtype] = None   # e.g. torch.bfloat16 on GPU
    progress: bool = True         # tqdm bars on stderr
    read_ahead: int = 8           # decoded frames waiting for the model
    on_progress: Optional[Callable[[str, int, int], None]] = None   # (stage, frames done, frames in all)
    release_memory: bool = True   # hand freed heap pages and the audio encoder's mapped pages back as it goes


class StageProgress:
    """One stage's progress: a tqdm bar (``show``) and ``on_progress(stage, done, total)``, advanced together."""

    def __init__(self, stage: str, total: int, show: bool, on_progress=None):
        self.stage, self.total, self.done, self.on_progress = stage, total, 0, on_progress
        self.bar = tqdm(total=total, desc=stage, unit="frame", disable=not show)
        self.update(0)

    def update(self, frames: int) -> None:
        self.done += frames
        self.bar.update(frames)
        if self.on_progress is not None:
            self.on_progress(self.stage, self.done, self.total)

    def close(self) -> None:
        self.bar.close()


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Lists of ``size`` consecutive items (the last one shorter)."""
    iterator = iter(items)
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


def render_chunk(generator: TalkLip, chunk: List[Tuple[np.ndarray, Optional[np.ndarray], int]],
                 embed, opts: SynthesisOptions, clock: StageClock,
                 reference: Optional[np.ndarray] = None) -> int:
    """Paste a generated face into each frame of ``chunk`` (frame, box or None, audio row) that has a
    box, in place; returns how many. ``embed``: the audio-encoder features, (T, C), or a function
    giving those of the rows asked. The reference face is the frame's own crop, or ``reference``."""
    with_face = [(frame, box, row) for frame, box, row in chunk if box is not None]
    if not with_face:
        return 0
    started = time.perf_counter()
    boxes = np.stack([box for _, box, _ in with_face])
    crops = np.stack([crop_face(frame, box, FACE_SIZE) for frame, box, _ in with_face])
    refs = crops if reference is None else np.repeat(reference[None], len(crops), axis=0)
    inputs = face_inputs(crops, refs)
    clock.add("crop", time.perf_counter() - started)
    rows = np.array([row for _, _, row in with_face], np.int64)
    emb = embed(rows) if callable(embed) else embed[torch.from_numpy(rows)]
    started = time.perf_counter()
    faces = render_faces(generator, inputs, emb, opts.device, opts.batch_size, opts.dtype)
    clock.add("generate", time.perf_counter() - started)
    started = time.perf_counter()
    for (frame, _, _), box, face in zip(with_face, boxes, faces):
        paste_faces(frame[None], box[None], face[None], opts.feather, in_place=True)
    clock.add("paste", time.perf_counter() - started)
    return len(with_face)


def render_into(out, generator: TalkLip, items: Iterable[Tuple[np.ndarray, Optional[np.ndarray], int]],
                embed, opts: SynthesisOptions, clock: StageClock,
                reference: Optional[np.ndarray] = None, bar: Optional[Callable[[int], None]] = None,
                chunk_frames: Optional[int] = None) -> int:
    """Write ``items`` (frame, face box or None, audio-encoder row), in output order, to ``out``
    (``write_batch``), ``chunk_frames`` (default ``opts.chunk_frames``) at a time: a frame with a box
    gets the generated face pasted in (``render_chunk``); a frame without one passes through untouched.
    ``bar(frames)`` hears each chunk written. Returns the number of frames that got a face."""
    faced, untrimmed = 0, 0
    for chunk in chunked(items, chunk_frames or opts.chunk_frames):
        faced += render_chunk(generator, chunk, embed, opts, clock, reference)
        out.write_batch([frame for frame, _, _ in chunk])
        if bar is not None:
            bar(len(chunk))
        untrimmed += len(chunk)
        del chunk
        if opts.release_memory and untrimmed >= TRIM_EVERY_FRAMES:
            release_free_memory()
            untrimmed = 0
    return faced


# ---------------------------------------------------------------------------------- dubbing
# dub() = open_speech -> open_face_source -> FaceFollower.first_face -> render_dub, one pass: the
# speech is encoded window by window as the frames reach it, and the face is followed a few frames
# ahead of the frames being generated (its own decoder), so the first frame comes out after one audio
# window and a few detections, whatever the length, and memory does not grow with it.

class Speech:
    """The new speech: its length, and the audio encoder's features for any 25 Hz rows, encoded
    window by window as asked (the windows of ``encode_audio``: up to ``window`` rows the transformer
    sees the whole utterance, as the original; longer speech overlaps windows by ``overlap`` rows a
    side). The encoder's file-backed weights are released after each use (``released_after_use``)."""

    def __init__(self, generator: TalkLip, samples: SpeechSamples, opts: SynthesisOptions, clock: StageClock,
                 overlap: int = AUDIO_WINDOW_OVERLAP):
        self.generator, self.samples, self.opts, self.clock = generator, samples, opts, clock
        self.duration_s = samples.count / AUDIO_RATE_HZ
        self.rows = feature_count(samples.count)
        self.window, self.overlap = opts.audio_window, overlap
        self.step = self.rows if self.rows <= self.window else self.window - 2 * overlap
        if self.step <= 0:
            raise ValueError(f"audio_window ({self.window}) must exceed twice the overlap ({overlap})")
        self._cache: Dict[int, torch.Tensor] = {}     # window number -> the rows it keeps

    def frames_at(self, fps: float) -> int:
        """How many video frames at ``fps`` it lasts (at least one): the dub's length."""
        return max(1, int(round(self.duration_s * fps)))

    def embeddings(self, rows: np.ndarray) -> torch.Tensor:
        """(len(rows), C) audio-encoder features of ``rows`` (25 Hz feature rows)."""
        windows = rows // self.step
        self._cache = {k: v for k, v in self._cache.items() if k >= windows.min()}   # frames move forward
        for window in np.unique(windows):
            if int(window) not in self._cache:
                self._cache[int(window)] = self._encode(int(window))
        return torch.cat([self._cache[int(w)][rows[windows == w] - int(w) * self.step] for w in np.unique(windows)])

    def _encode(self, window: int) -> torch.Tensor:
        started = time.perf_counter()
        keep_start, keep_end = window * self.step, min(self.rows, (window + 1) * self.step)
        start, end = audio_window(keep_start, keep_end, self.rows, self.window, self.overlap)
        feats = torch.from_numpy(talklip_feature_rows(self.samples, start, end))
        encoder = self.generator.audio_encoder if self.opts.release_memory else None
        with torch.no_grad(), released_after_use(encoder):
            out, _ = self.generator.encode_audio(feats.T[None].to(self.opts.device))
        self.clock.add("audio", time.perf_counter() - started)
        return out[keep_start - start: keep_end - start, 0].float().cpu()


@dataclass
class FaceSource:
    """The video (or still image) whose face is dubbed."""
    path: str
    fps: float
    width: int
    height: int
    declared_s: Optional[float] = None    # the video stream's declared duration
    image: Optional[np.ndarray] = None    # the picture, for a still

    def frames_hint(self, count: int) -> int:
        """About how many frames one forward pass over ``count`` frames will see (for progress)."""
        if self.image is not None:
            return 1
        return count if self.declared_s is None else max(1, min(count, int(round(self.declared_s * self.fps))))

    def forward(self, count: int) -> Tuple[Optional[VideoReader], Iterator[SourceFrame]]:
        """One pass over its first ``count`` frames at the constant rate ``fps`` (a still: once)."""
        if self.image is not None:
            return None, iter([SourceFrame(0, self.image)])
        reader = VideoReader(self.path, allow_truncated=True)
        return reader, itertools.islice(reader.resampled(), count)


@dataclass
class FaceTrack:
    """The followed face on each frame of one forward pass over the source, as ``FaceFollower`` found it."""
    boxes: List[Optional[np.ndarray]]  # per frame: (4,) int64 x1 y1 x2 y2, or None (the frame passes through)
    source_index: np.ndarray           # per frame: its decoded index in the file (resampling repeats or drops)
    decoded_frames: int                # frames decoded from the file
    damaged: bool                      # decoding stopped before the video stream's declared end
    detected_frames: int               # frames the detector ran on
    detection_misses: int              # of those, frames on which it found no face
    far_from_point: int = 0            # tracks started on a face far from the --follow point

    @property
    def frames(self) -> int:
        return len(self.boxes)

    def passthrough_spans(self) -> List[Tuple[int, int]]:
        """[start, end) runs of frames without the face."""
        spans, start = [], None
        for k, box in enumerate(self.boxes + [np.zeros(4)]):
            if box is None and start is None:
                start = k
            elif box is not None and start is not None:
                spans.append((start, k))
                start = None
        return spans


class HeapTrimmedDetector:
    """``detector``, with the heap trimmed (``release_free_memory``) before a call on frames larger
    than the last call's: a search at ``detect_max_side`` in the middle of a dub (the face lost at its
    own scale) holds S3FD's full-view activations, ~120 MB at 640x360, on top of whatever the heap has
    grown since the dub's last trim (measured: a 300 s 720p dub's peak, 1027 MB, was such a search)."""

    def __init__(self, detector):
        self.detector, self.last_pixels = detector, None

    def detect_faces(self, frames):
        pixels = frames.shape[0] * frames.shape[1] * frames.shape[2]
        if self.last_pixels is not None and pixels > self.last_pixels:
            release_free_memory()
        self.last_pixels = pixels
        return self.detector.detect_faces(frames)


class FaceFollower:
    """Follows the face through one forward pass over the source's first ``count`` frames, decoding
    (in a thread) only as far as asked: ``box(position)`` returns the box of that frame of the pass,
    decoding and tracking up to it first. ``first_face()`` looks for the first frame with the face and
    raises when there is none (before anything is generated or written). ``track()`` is the
    finished pass (``FaceTrack``). ``release_memory``: the detector is a ``HeapTrimmedDetector``."""

    def __init__(self, source: FaceSource, count: int, detector, tracking: TrackingOptions, clock: StageClock,
                 read_ahead: int = 8, strict: bool = False, release_memory: bool = False):
        self.source, self.strict = source, strict
        self.reader, frames = source.forward(count)
        self.frames = in_background(clock.timed("decode", frames), read_ahead, name="decoder")
        detector = HeapTrimmedDetector(detector) if release_memory else detector
        self.detect = KeyFrameDetector(detector, tracking.detect_max_side, clock)
        self.tracker = FaceTracker(self.detect, tracking, source.fps)
        self.boxes: List[Optional[np.ndarray]] = []
        self.source_index: List[int] = []
        self.finished = False

    def _advance(self) -> None:
        """Push frames until the tracker hands some boxes back, or finish the pass."""
        before = len(self.boxes)
        while len(self.boxes) == before and not self.finished:
            frame = next(self.frames, None)
            if frame is None:
                self.boxes += [found.box for found in self.tracker.finish()]
                self._finish()
                return
            self.source_index.append(frame.index)
            self.boxes += [found.box for found in self.tracker.push(frame.image)]

    def _finish(self) -> None:
        self.finished = True
        if self.reader is not None:
            self.reader.close()
            if self.strict and self.reader.truncated:
                raise self.reader.truncation_error()
        if all(box is None for box in self.boxes):
            raise no_face(self.source.path)

    def box(self, position: int) -> Optional[np.ndarray]:
        while position >= len(self.boxes) and not self.finished:
            self._advance()
        return self.boxes[position]

    def first_face(self, progress: Optional[StageProgress] = None) -> None:
        while not self.finished and all(box is None for box in self.boxes):
            self._advance()
            if progress is not None:
                progress.update(len(self.boxes) - progress.done)
        if progress is not None:
            progress.close()

    def position(self, k: int) -> int:
        """The pass' frame shown at output frame ``k``: forward, then back and forth (``ping_pong``)."""
        while not self.finished and k >= len(self.source_index):
            self._advance()
        return k if k < len(self.source_index) else int(ping_pong(k + 1, len(self.boxes))[k])

    def close(self) -> None:
        """Stop the decoder thread (the pass need not be finished)."""
        self.frames.close()
        if self.reader is not None:
            self.reader.close()

    def track(self) -> FaceTrack:
        while not self.finished:
            self._advance()
        decoded = self.reader.decoded if self.reader is not None else 1
        damaged = self.reader is not None and self.reader.truncated
        return FaceTrack(self.boxes, np.asarray(self.source_index, np.int64), decoded, damaged,
                         self.detect.calls, self.detect.misses, self.tracker.far_from_point)


@dataclass
class DubResult:
    frames: int                        # frames written (the speech's length at the source's rate)
    fps: float
    duration_s: float                  # the speech's length
    source_frames: int                 # frames of one forward pass over the source
    declared_s: Optional[float]        # the video stream's declared duration (None for a still)
    decoded_frames: int
    damaged: bool
    frames_with_face: int              # frames that got a generated face
    detected_frames: int               # frames the detector ran on
    detection_misses: int              # of those, frames on which it found no face
    seconds: Dict[str, float]          # per stage (StageClock; stages in threads overlap)
    with_face: np.ndarray              # (frames,) bool: which output frames got a generated face
    first_frame_s: Optional[float] = None   # from the call to the first frame handed to the encoder
    detected_pixels: int = 0           # pixels the detector was given, in all
    far_from_point: int = 0            # faces followed although none lay near the --follow point


def decodable_stream(video_path: str, workdir: str, say=None) -> str:
    """``video_path``, or a copy in ``workdir`` that the decoder reads as it should, said once: when its first
    video stream is cover art and another is the real video, a copy holding only the real one (the decoder
    reads the first video stream); when the stream is HDR or BT.2020, that stream converted to BT.709 SDR
    (``colour_conversion``), which is what a dub is."""
    if is_image(video_path):
        return video_path
    say = say or say_on_stderr
    found = real_video_stream(video_path)
    stream = 0 if found is None else found[0]
    if found is not None:
        say(found[1])
    conversion = colour_conversion(video_path, stream)
    if conversion is not None:
        copy = os.path.join(workdir, "video_bt709.mp4")
        convert_video_stream(video_path, stream, conversion, copy)
        say(conversion.note)
        return copy
    if found is None:
        return video_path
    copy = os.path.join(workdir, "video_stream.mkv")
    keep_video_stream(video_path, stream, copy)
    return copy


def open_face_source(path: str) -> FaceSource:
    if is_image(path):
        image = read_image(path)
        return FaceSource(path, STILL_IMAGE_FPS, image.shape[1], image.shape[0], image=image)
    with VideoReader(path, allow_truncated=True) as reader:
        if h264_fit(reader.width, reader.height) < 1.0:
            raise MediaError(f"{path} is {reader.width}x{reader.height}, larger than an H.264 video can be (level "
                             f"6.2: 8192x4320 or the same area): scale it down first (e.g. ffmpeg -vf scale=-2:4320)")
        return FaceSource(path, reader.fps, reader.width, reader.height, reader.info.duration_s)


def dub_frames(source: FaceSource, follower: FaceFollower, rows: np.ndarray, chunk_frames: int, clock: StageClock,
               spill_path: Optional[str] = None) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray], int]]:
    """(frame, box or None, audio row) per output frame: the source forward, then (when the speech
    outlasts it) backward and forward again, decoded by index (``FrameSeeker``, which keeps the
    frames of the first pass in ``spill_path`` when given; the follower decodes and tracks ahead on
    its own)."""
    if source.image is not None:
        box = follower.box(0)
        for k in range(len(rows)):
            yield source.image.copy(), box, rows[k]
        return
    with FrameSeeker(source.path, spill_path) as seeker:
        for start in range(0, len(rows), chunk_frames):
            positions = [follower.position(k) for k in range(start, min(len(rows), start + chunk_frames))]
            boxes = [follower.box(p) for p in positions]
            indices = np.array([follower.source_index[p] for p in positions], np.int64)
            started = time.perf_counter()
            frames = seeker.get(indices)
            clock.add("decode", time.perf_counter() - started)
            for k, (box, frame) in enumerate(zip(boxes, frames)):
                yield frame, box, rows[start + k]


def frames_per_chunk(opts: SynthesisOptions, width: int, height: int) -> int:
    """``opts.chunk_frames``, fewer for large frames: a chunk holds at most CHUNK_BYTES of frames (a
    whole number of generator batches when it holds one or more)."""
    frames = max(1, min(opts.chunk_frames, CHUNK_BYTES // (width * height * 3)))
    return frames - frames % opts.batch_size if frames >= opts.batch_size else frames


def spill_file(source: FaceSource, num_out: int, workdir: str) -> Optional[str]:
    """Where the frames of the first pass are kept for the passes back and forth, when the speech
    outlasts the video and they fit in SPILL_BYTES (and twice that is free on disk); else None
    (replayed frames are then decoded again, seeking)."""
    frames = source.frames_hint(num_out + 1)
    needed = frames * source.width * source.height * 3
    if source.image is not None or num_out <= frames or needed > SPILL_BYTES:
        return None
    return os.path.join(workdir, "frames.raw") if shutil.disk_usage(workdir).free > 2 * needed else None


def render_dub(generator: TalkLip, source: FaceSource, follower: FaceFollower, speech: Speech, audio_path: str,
               out_path: str, opts: SynthesisOptions, clock: StageClock, started: float,
               workdir: Optional[str] = None) -> Tuple[int, Optional[float]]:
    """Write the dub: ``speech``'s length at the source's frame rate, every frame with the face given a
    generated one. Frames are decoded by index and the face followed ahead in this thread, between
    chunks (the detector and the generator never hold activations at the same time: on 2 cores a
    reader thread doing both made the dub no faster and its peak memory ~150 MB higher); the
    follower's own decoding and the encoding run in threads. Returns the frames that got a face and
    the seconds from ``started`` to the first frame handed to the encoder."""
    num_out = speech.frames_at(source.fps)
    rows = frame_feature_rows(num_out, source.fps, speech.rows)
    chunk = frames_per_chunk(opts, source.width, source.height)
    bar = StageProgress("generating", num_out, opts.progress, opts.on_progress)
    first = []
    with VideoWriter(out_path, source.fps, source.width, source.height, audio_path=audio_path) as writer, \
            BackgroundWriter(writer, maxsize=1, clock=clock) as out:
        spill = spill_file(source, num_out, workdir) if workdir else None
        items = dub_frames(source, follower, rows, chunk, clock, spill)

        def on_chunk(frames: int) -> None:
            if not first:
                first.append(time.perf_counter() - started)
            bar.update(frames)

        faced = render_into(out, generator, items, speech.embeddings, opts, clock, bar=on_chunk, chunk_frames=chunk)
        bar.close()
        if opts.on_progress is not None:
            opts.on_progress("encoding", num_out, num_out)      # the last frames and the sound go in
    return faced, (first[0] if first else None)


def dub(generator: TalkLip, video_path: str, audio_path: str, out_path: str, detector,
        opts: SynthesisOptions, tracking: Optional[TrackingOptions] = None, strict: bool = False) -> DubResult:
    """Dub ``video_path`` (or a still image) with the speech in ``audio_path`` into ``out_path``.

    One pass: the face is looked for until a frame shows it (a video without the face is refused
    here, before anything is generated or written); then the frames are generated and pasted in
    chunks while the face is followed a few frames ahead, the speech encoded window by window as the
    frames reach it, and the frames encoded as they come. The output has the input's frame rate and
    size and lasts as long as the audio: when the audio is longer the video plays forward and
    backward. Frames where the face is missing for longer than ``tracking.max_gap_s`` pass through
    untouched. ``damaged`` says the frames stopped before the video stream's declared end
    (``VideoReader``); with ``strict`` that is an error, and nothing is written."""
    tracking = tracking or TrackingOptions()
    clock = StageClock()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="talklip_dub_") as workdir, SpeechSamples(audio_path, workdir) as samples:
        speech = Speech(generator, samples, opts, clock)
        source = open_face_source(decodable_stream(video_path, workdir))
        check_follow_point(tracking.follow, source.width, source.height, video_path)
        num_out = speech.frames_at(source.fps)
        read_ahead = max(1, min(opts.read_ahead, frames_per_chunk(opts, source.width, source.height)))
        follower = FaceFollower(source, num_out, detector, tracking, clock, read_ahead, strict, opts.release_memory)
        try:
            follower.first_face(StageProgress("detecting faces", min(num_out, source.frames_hint(num_out)),
                                              opts.progress, opts.on_progress))
            faced, first_frame_s = render_dub(generator, source, follower, speech, audio_path, out_path, opts, clock,
                                              started, workdir)
            track = follower.track()
        finally:
            follower.close()
    order = ping_pong(num_out, track.frames)
    return DubResult(frames=num_out, fps=source.fps, duration_s=speech.duration_s, source_frames=track.frames,
                     declared_s=source.declared_s,
                     decoded_frames=track.decoded_frames, damaged=track.damaged, frames_with_face=faced,
                     detected_frames=track.detected_frames, detection_misses=track.detection_misses,
                     seconds=clock.report(), with_face=np.array([track.boxes[i] is not None for i in order]),
                     first_frame_s=first_frame_s, detected_pixels=follower.detect.pixels,
                     far_from_point=track.far_from_point)


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
        render_into(out, generator, items, audio_emb, opts, clock, reference=reference, bar=bar.update)
        for _ in frames:               # count the rest (a damaged file raises at its end)
            pass
        if decoded[0] != count:
            raise MediaError(f"{video_path} decodes to {decoded[0]} frames but its boxes file has {count}: "
                             f"rerun preprocessing (bbx_extract) for this clip")
    bar.close()
    return {"frames": count, "fps": fps, "seconds": clock.report()}
