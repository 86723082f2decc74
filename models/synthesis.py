"""Turning a face video and speech into a lip-synced video with a TalkLip generator.

Shared by ``inf_demo.py`` (dubbing) and ``inf_test.py`` (test-set synthesis). Work is done in
chunks of frames: decode, crop, generate, paste back, encode, so memory does not grow with the
clip. Audio features (25 Hz) are mapped to video frames by time, so any frame rate works.
"""
import itertools
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from face_detection.boxes import crop_face
from face_detection.tracking import FaceTracker, KeyFrameDetector, TrackingOptions, no_face
from models.talklip import FACE_SIZE, TalkLip
from utils.audio import FEATURE_RATE_HZ, AUDIO_RATE_HZ, audio_visual_align, load_audio, talklip_features
from utils.errors import MediaError
from utils.pipeline import BackgroundWriter, StageClock, in_background, release_free_memory
from utils.video import FrameSeeker, SourceFrame, VideoReader, VideoWriter

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
    progress: bool = True         # tqdm bars on stderr
    read_ahead: int = 8           # decoded frames waiting for the model
    on_progress: Optional[Callable[[str, int, int], None]] = None   # (stage, frames done, frames in all)


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
                 audio_emb: torch.Tensor, opts: SynthesisOptions, clock: StageClock,
                 reference: Optional[np.ndarray] = None) -> int:
    """Paste a generated face into each frame of ``chunk`` (frame, box or None, audio row) that has a
    box, in place; returns how many. The reference face is the frame's own crop, or ``reference``."""
    with_face = [(frame, box, row) for frame, box, row in chunk if box is not None]
    if not with_face:
        return 0
    started = time.perf_counter()
    boxes = np.stack([box for _, box, _ in with_face])
    crops = np.stack([crop_face(frame, box, FACE_SIZE) for frame, box, _ in with_face])
    refs = crops if reference is None else np.repeat(reference[None], len(crops), axis=0)
    emb = audio_emb[torch.from_numpy(np.array([row for _, _, row in with_face]))]
    inputs = face_inputs(crops, refs)
    clock.add("crop", time.perf_counter() - started)
    started = time.perf_counter()
    faces = render_faces(generator, inputs, emb, opts.device, opts.batch_size, opts.dtype)
    clock.add("generate", time.perf_counter() - started)
    started = time.perf_counter()
    for (frame, _, _), box, face in zip(with_face, boxes, faces):
        paste_faces(frame[None], box[None], face[None], opts.feather, in_place=True)
    clock.add("paste", time.perf_counter() - started)
    return len(with_face)


def render_into(out, generator: TalkLip, items: Iterable[Tuple[np.ndarray, Optional[np.ndarray], int]],
                audio_emb: torch.Tensor, opts: SynthesisOptions, clock: StageClock,
                reference: Optional[np.ndarray] = None, bar=None) -> int:
    """Write ``items`` (frame, face box or None, audio-encoder row), in output order, to ``out``
    (``write_batch``), ``opts.chunk_frames`` at a time: a frame with a box gets the generated face
    pasted in (``render_chunk``); a frame without one passes through untouched. Returns the number of
    frames that got a face."""
    faced = 0
    for chunk in chunked(items, opts.chunk_frames):
        faced += render_chunk(generator, chunk, audio_emb, opts, clock, reference)
        out.write_batch([frame for frame, _, _ in chunk])
        if bar is not None:
            bar.update(len(chunk))
        del chunk
        release_free_memory()
    return faced


# ---------------------------------------------------------------------------------- dubbing
# dub() = encode_speech -> open_face_source -> track_face -> render_dub. Each step hands the next a
# dataclass; nothing is shared on the side.

@dataclass
class Speech:
    """The new speech: its length and the audio encoder's features, one row per 25 Hz audio frame."""
    duration_s: float
    audio_emb: torch.Tensor           # (T, C)

    def frames_at(self, fps: float) -> int:
        """How many video frames at ``fps`` it lasts (at least one): the dub's length."""
        return max(1, int(round(self.duration_s * fps)))


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
    """The followed face on each frame of one forward pass over the source, as ``track_face`` found it."""
    boxes: List[Optional[np.ndarray]]  # per frame: (4,) int64 x1 y1 x2 y2, or None (the frame passes through)
    source_index: np.ndarray           # per frame: its decoded index in the file (resampling repeats or drops)
    decoded_frames: int                # frames decoded from the file
    damaged: bool                      # decoding stopped before the video stream's declared end
    detected_frames: int               # frames the detector ran on
    detection_misses: int              # of those, frames on which it found no face

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
    seconds: Dict[str, float]          # per stage (StageClock)
    with_face: np.ndarray              # (frames,) bool: which output frames got a generated face


def encode_speech(generator: TalkLip, audio_path: str, opts: SynthesisOptions, clock: StageClock) -> Speech:
    wav = load_audio(audio_path)
    started = time.perf_counter()
    audio_emb = encode_audio(generator, talklip_features(wav, AUDIO_RATE_HZ), opts.device, max_frames=opts.audio_window)
    clock.add("audio", time.perf_counter() - started)
    return Speech(len(wav) / AUDIO_RATE_HZ, audio_emb)


def open_face_source(path: str) -> FaceSource:
    if is_image(path):
        image = read_image(path)
        return FaceSource(path, STILL_IMAGE_FPS, image.shape[1], image.shape[0], image=image)
    with VideoReader(path, allow_truncated=True) as reader:
        return FaceSource(path, reader.fps, reader.width, reader.height, reader.info.duration_s)


def track_face(source: FaceSource, count: int, detector, tracking: TrackingOptions, clock: StageClock,
               read_ahead: int = 8, strict: bool = False, progress: Optional[StageProgress] = None) -> FaceTrack:
    """Decode (in a thread) the source's first ``count`` frames and follow its face through them.
    Raises, before anything is generated, when no frame shows the face, or (``strict``) when the
    file's frames stop before its declared end."""
    reader, frames = source.forward(count)
    detect = KeyFrameDetector(detector, tracking.detect_max_side, clock)
    tracker = FaceTracker(detect, tracking, source.fps)
    boxes: List[Optional[np.ndarray]] = []
    source_index: List[int] = []
    for frame in in_background(clock.timed("decode", frames), read_ahead, name="decoder"):
        source_index.append(frame.index)
        found = tracker.push(frame.image)
        boxes += [face.box for face in found]
        if progress is not None and found:
            progress.update(len(found))
    boxes += [found.box for found in tracker.finish()]
    if progress is not None:
        progress.update(len(boxes) - progress.done)
        progress.close()
    if reader is not None:
        reader.close()
    damaged = reader is not None and reader.truncated
    if strict and damaged:
        raise reader.truncation_error()
    if all(box is None for box in boxes):
        raise no_face(source.path)
    return FaceTrack(boxes, np.asarray(source_index, np.int64), reader.decoded if reader is not None else 1,
                     damaged, detect.calls, detect.misses)


def dub_frames(source: FaceSource, track: FaceTrack, rows: np.ndarray, chunk_frames: int
               ) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray], int]]:
    """(frame, box or None, audio row) per output frame: the source forward, then (when the speech
    outlasts it) backward and forward again, re-decoded by index (``FrameSeeker``)."""
    order = ping_pong(len(rows), track.frames)
    if source.image is not None:
        for k in range(len(rows)):
            yield source.image.copy(), track.boxes[0], rows[k]
        return
    with FrameSeeker(source.path) as seeker:
        for start in range(0, len(rows), chunk_frames):
            positions = order[start:start + chunk_frames]
            for k, (position, frame) in enumerate(zip(positions, seeker.get(track.source_index[positions]))):
                yield frame, track.boxes[position], rows[start + k]


def render_dub(generator: TalkLip, source: FaceSource, track: FaceTrack, speech: Speech, audio_path: str,
               out_path: str, opts: SynthesisOptions, clock: StageClock) -> int:
    """Write the dub: ``speech``'s length at the source's frame rate, every frame with the face given a
    generated one; frames decoded in a thread, encoded in another. Returns the frames that got a face."""
    num_out = speech.frames_at(source.fps)
    rows = frame_feature_rows(num_out, source.fps, len(speech.audio_emb))
    bar = StageProgress("generating", num_out, opts.progress, opts.on_progress)
    with VideoWriter(out_path, source.fps, source.width, source.height, audio_path=audio_path) as writer, \
            BackgroundWriter(writer, maxsize=1, clock=clock) as out:
        items = in_background(clock.timed("decode", dub_frames(source, track, rows, opts.chunk_frames)),
                              opts.read_ahead, name="decoder")
        faced = render_into(out, generator, items, speech.audio_emb, opts, clock, bar=bar)
        bar.close()
        if opts.on_progress is not None:
            opts.on_progress("encoding", num_out, num_out)      # the last frames and the sound go in
    return faced


def dub(generator: TalkLip, video_path: str, audio_path: str, out_path: str, detector,
        opts: SynthesisOptions, tracking: Optional[TrackingOptions] = None, strict: bool = False) -> DubResult:
    """Dub ``video_path`` (or a still image) with the speech in ``audio_path`` into ``out_path``.

    The speech is encoded; the face is found on key frames and followed through the frames the dub
    needs (``track_face``: a video without the face, or with ``strict`` a damaged one, is refused here,
    before anything is generated or written); then the frames are decoded again, generated and pasted
    in chunks, and encoded as they come (``render_dub``). The output has the input's frame rate and
    size and lasts as long as the audio: when the audio is longer the video plays forward and backward.
    Frames where the face is missing for longer than ``tracking.max_gap_s`` pass through untouched.
    ``damaged`` says the frames stopped before the video stream's declared end (``VideoReader``)."""
    tracking = tracking or TrackingOptions()
    clock = StageClock()
    speech = encode_speech(generator, audio_path, opts, clock)
    source = open_face_source(video_path)
    num_out = speech.frames_at(source.fps)
    detecting = StageProgress("detecting faces", min(num_out, source.frames_hint(num_out)), opts.progress,
                              opts.on_progress)
    track = track_face(source, num_out, detector, tracking, clock, opts.read_ahead, strict, detecting)
    faced = render_dub(generator, source, track, speech, audio_path, out_path, opts, clock)
    return DubResult(frames=num_out, fps=source.fps, duration_s=speech.duration_s, source_frames=track.frames,
                     declared_s=source.declared_s,
                     decoded_frames=track.decoded_frames, damaged=track.damaged, frames_with_face=faced,
                     detected_frames=track.detected_frames, detection_misses=track.detection_misses,
                     seconds=clock.report(),
                     with_face=np.array([track.boxes[i] is not None for i in ping_pong(num_out, track.frames)]))


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
