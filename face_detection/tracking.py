"""Face boxes for a stream of frames: detection on key frames, one face followed, gaps.

- Detection runs on every ``detect_every``-th frame (and the last one), on a copy whose longest
  side is at most ``detect_max_side`` pixels (INTER_AREA; 0 keeps full resolution); boxes are mapped
  back to full resolution.
- Between two key frames whose boxes agree (the same face on both, IoU >= AGREE_IOU) boxes are
  interpolated linearly. Where they disagree (a cut, a face on one side only, fast motion) the
  middle frame is detected and both halves are resolved the same way (bisection), so a cut costs
  about log2(detect_every) extra detections and is placed on the exact frame.
- One face is followed: at each detection the face overlapping the followed one most
  (IoU >= MATCH_IOU with its last box) continues the track; when none does, a face is chosen by
  ``follow`` (the largest, or the one nearest a point) and a new track starts (a cut). With
  ``detect_every=1`` and ``detect_max_side=0`` every frame is detected at full resolution, as the
  original; with one face in view the boxes are exactly the detector's best box per frame.
- Frames where the followed face is missing: a gap of at most ``max_gap_s`` seconds inside one track
  is interpolated (at the start or end of the clip the nearest box is repeated); a longer gap, or
  one between two different tracks, has no box (None): dubbing passes those frames through.
  ``max_gap_s=None`` fills every gap (preprocessing, which needs a box per frame).
- Boxes are smoothed by a centred moving average over ``smooth_window`` frames within a track,
  never across a gap or a cut.

Everything streams: at most ``detect_every * KEY_BATCH`` frames, plus the gap and smoothing
windows, are held.
"""
import collections
import dataclasses
import time
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from utils.errors import NoFaceError, TalkLipError

DEFAULT_DETECT_EVERY = 8
DEFAULT_DETECT_MAX_SIDE = 640
AGREE_IOU = 0.5      # two key frames this similar are interpolated without detecting between them
MATCH_IOU = 0.3      # a detection overlapping the followed face this much continues its track
KEY_BATCH = 2        # key frames detected in one call
DEFAULT_MAX_GAP_S = 0.2

Box = np.ndarray     # (4,) int64 x1 y1 x2 y2


@dataclass
class TrackingOptions:
    detect_every: int = DEFAULT_DETECT_EVERY
    detect_max_side: int = DEFAULT_DETECT_MAX_SIDE   # 0: full resolution
    max_gap_s: Optional[float] = DEFAULT_MAX_GAP_S    # longest no-face gap filled; None: fill every gap
    smooth_window: int = 1
    follow: Optional[Tuple[float, float]] = None      # None: the largest face; (x, y): nearest this point

    def __post_init__(self):
        if self.detect_every < 1:
            raise TalkLipError(f"--detect_every must be at least 1, got {self.detect_every}")
        if self.detect_max_side < 0:
            raise TalkLipError(f"--detect_max_side must be 0 (full resolution) or positive, got {self.detect_max_side}")


def no_face(source: str) -> NoFaceError:
    """The error for a video in which no frame shows a face."""
    return NoFaceError(f"no face found in any frame of {source}: check the video shows a frontal face, "
                       f"or use the S3FD detector (--s3fd_path)")


def parse_follow(text: str) -> Optional[Tuple[float, float]]:
    """'largest' -> None; 'X,Y' -> (x, y) in pixels of the frame."""
    if text == "largest":
        return None
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise TalkLipError(f"--follow must be 'largest' or a point 'X,Y' in pixels, got {text!r}") from None
    return x, y


def add_tracking_args(parser, smooth_window: int, dubbing: bool) -> None:
    """The face-finding flags, shared by inf_demo.py (``dubbing``) and preparation/bbx_extract.py."""
    from utils.cli import non_negative_float, non_negative_int, positive_int
    parser.add_argument("--detect_every", type=positive_int, default=DEFAULT_DETECT_EVERY,
                        help="run the face detector on every K-th frame and interpolate between; frames "
                             "between key frames that disagree are detected too (1: every frame, as the original)")
    parser.add_argument("--detect_max_side", type=non_negative_int, default=DEFAULT_DETECT_MAX_SIDE,
                        help="detect on a copy scaled down to this longest side in pixels, boxes mapped back "
                             "(0: full resolution, as the original)")
    parser.add_argument("--smooth_window", type=positive_int, default=smooth_window,
                        help="average face boxes over N frames within a shot (1: off)")
    if dubbing:
        parser.add_argument("--max_gap", type=non_negative_float, default=DEFAULT_MAX_GAP_S,
                            help="seconds: frames without the face for longer than this pass through "
                                 "untouched (a cutaway, a hand); shorter gaps are interpolated")
        parser.add_argument("--follow", default="largest",
                            help="with several faces, whom to dub: 'largest', or 'X,Y' for the face nearest "
                                 "that pixel; the chosen face is then followed from frame to frame")


def tracking_options(args) -> TrackingOptions:
    """TrackingOptions from the flags of :func:`add_tracking_args`."""
    max_gap = getattr(args, "max_gap", None)
    if max_gap is not None and max_gap < 0:
        raise TalkLipError(f"--max_gap must be 0 or more seconds, got {max_gap}")
    return TrackingOptions(detect_every=args.detect_every, detect_max_side=args.detect_max_side,
                           max_gap_s=max_gap, smooth_window=args.smooth_window,
                           follow=parse_follow(getattr(args, "follow", "largest")))


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = float(w) * float(h)
    union = float(a[2] - a[0]) * float(a[3] - a[1]) + float(b[2] - b[0]) * float(b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class KeyFrameDetector:
    """All faces of a frame as (n, 4) int64 boxes at full resolution, from a scaled-down copy."""

    def __init__(self, detector, max_side: int, clock=None):
        self.detector, self.max_side, self.clock = detector, max_side, clock
        self.calls = 0

    def __call__(self, frames: List[np.ndarray]) -> List[np.ndarray]:
        started = time.perf_counter()
        height, width = frames[0].shape[:2]
        scale = 1.0
        if self.max_side and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
            back = np.array([width / size[0], height / size[1]] * 2)
        else:
            small, back = np.stack(frames), np.ones(4)
        found = []
        for dets in self.detector.detect_faces(small):
            boxes = np.asarray(dets, np.float64).reshape(-1, 5)[:, :4] * back
            found.append(np.clip(boxes, 0, None).astype(np.int64))   # the original: clip at 0, truncate
        self.calls += len(frames)
        if self.clock is not None:
            self.clock.add("detect", time.perf_counter() - started)
        return found


@dataclass
class _Seen:
    box: Optional[Box]
    track: Optional[int]
    last_box: Optional[Box]       # the followed face's last box up to this frame (across gaps)
    last_track: Optional[int]
    last_index: int               # the frame where it was last seen


class _Follower:
    """Chooses, among a frame's faces, the one that continues the followed face.

    A face overlapping the followed face's last box continues it. While the followed face has been
    missing for at most ``patience`` frames, other faces are ignored (a detector miss, a hand);
    after that, or when no face was followed yet, one is chosen by ``follow`` and a new track
    starts (a cut, or the person left)."""

    def __init__(self, follow, patience: int):
        self.follow, self.patience = follow, patience
        self.tracks = 0

    def choose(self, index: int, faces: np.ndarray, before: Optional[_Seen]) -> _Seen:
        if before is not None and before.last_box is not None:
            if len(faces):
                overlaps = [iou(face, before.last_box) for face in faces]
                best = int(np.argmax(overlaps))
                if overlaps[best] >= MATCH_IOU:
                    return _Seen(faces[best], before.last_track, faces[best], before.last_track, index)
            if index - before.last_index <= self.patience or not len(faces):
                return _Seen(None, None, before.last_box, before.last_track, before.last_index)
        if not len(faces):
            return _Seen(None, None, None, None, index)
        if self.follow is None:
            pick = int(np.argmax((faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])))
        else:
            centres = (faces[:, :2] + faces[:, 2:]) / 2.0
            pick = int(np.argmin(np.hypot(centres[:, 0] - self.follow[0], centres[:, 1] - self.follow[1])))
        self.tracks += 1
        return _Seen(faces[pick], self.tracks, faces[pick], self.tracks, index)


def _agree(a: _Seen, b: _Seen) -> bool:
    if a.box is None and b.box is None:
        return True
    return a.box is not None and b.box is not None and a.track == b.track and iou(a.box, b.box) >= AGREE_IOU


def _observe(frames: Iterable[np.ndarray], detect: KeyFrameDetector, opts: TrackingOptions, patience: int
             ) -> Iterator[Tuple[int, np.ndarray, Optional[Box], Optional[int]]]:
    """(index, frame, box or None, track) per frame, before gap filling and smoothing."""
    follower = _Follower(opts.follow, patience)
    step = opts.detect_every
    anchor = None          # (index, frame, _Seen) of the last resolved key frame, already yielded
    held: List[np.ndarray] = []   # frames after the anchor

    def resolve(first: int, frames_: List[np.ndarray], keys: List[int], faces: Dict[int, np.ndarray]):
        """Resolve frames_[1:] (absolute indices first+1...), frames_[0] being the anchor, key frames
        ``keys`` (positions in frames_) already detected into ``faces``."""
        seen: Dict[int, _Seen] = {0: anchor[2]}

        # segments to resolve, in frame order (a stack, not recursion: a recursive closure would be
        # a reference cycle that keeps every window's frames alive until the garbage collector runs)
        todo = [(a, b) for a, b in zip([0] + keys[:-1], keys)][::-1]
        while todo:
            a, b = todo.pop()
            if b not in faces:
                faces[b] = detect([frames_[b]])[0]
            seen[b] = follower.choose(first + b, faces[b], seen[a])
            if b - a > 1 and not _agree(seen[a], seen[b]):
                middle = (a + b) // 2
                todo += [(middle, b), (a, middle)]
                continue
            for k in range(a + 1, b):
                if seen[a].box is None:
                    seen[k] = _Seen(None, None, seen[a].last_box, seen[a].last_track, seen[a].last_index)
                else:
                    w = (k - a) / (b - a)
                    box = np.round((1 - w) * seen[a].box + w * seen[b].box).astype(np.int64)
                    seen[k] = _Seen(box, seen[a].track, box, seen[a].track, first + k)
        return [(first + k, frames_[k], seen[k].box, seen[k].track) for k in range(1, len(frames_))], seen[len(frames_) - 1]

    def flush(final: bool):
        nonlocal anchor, held
        if not held:
            return []
        # the key frames in ``held`` (relative to the anchor) get detected in one batch
        count = len(held) if final else (len(held) // step) * step
        if count == 0:
            return []
        window = [anchor[1]] + held[:count]
        keys = list(range(step, count, step)) + [count]
        faces = dict(zip(keys, detect([window[k] for k in keys])))
        out, last = resolve(anchor[0], window, keys, faces)
        anchor = (anchor[0] + count, window[-1], last)
        held = held[count:]
        return out

    for index, frame in enumerate(frames):
        if anchor is None:
            seen = follower.choose(0, detect([frame])[0], None)
            anchor = (0, frame, seen)
            yield 0, frame, seen.box, seen.track
            continue
        held.append(frame)
        if len(held) >= step * KEY_BATCH:
            yield from flush(final=False)
    yield from flush(final=True)


def _fill_gaps(items, max_gap: Optional[int]):
    """Give short gaps boxes (interpolated inside a track, the nearest box at the clip's ends)."""
    run = []                 # frames without a box since the last boxed frame
    last = None              # (box, track) of the last boxed frame
    overflow = False         # the current run is already longer than max_gap: pass through

    def fits(length):
        return max_gap is None or length <= max_gap

    for item in items:
        index, frame, box, track = item
        if box is None:
            if overflow:
                yield item
                continue
            run.append(item)
            if not fits(len(run)):
                yield from run
                run, overflow = [], True
            continue
        if run:
            if last is None:
                fill = [box] * len(run)
            elif last[1] == track or max_gap is None:
                fill = [np.round(last[0] + (box - last[0]) * (k + 1) / (len(run) + 1)).astype(np.int64)
                        for k in range(len(run))]
            else:
                fill = [None] * len(run)
            for (i, f, _, _), b in zip(run, fill):
                yield i, f, b, (track if b is not None else None)
            run = []
        overflow = False
        last = (box, track)
        yield item
    if run:
        for i, f, _, _ in run:
            yield i, f, (last[0] if last is not None else None), (last[1] if last is not None else None)


def _smooth(items, window: int):
    """Centred moving average of boxes over ``window`` frames within each track (edges repeated)."""
    if window <= 1:
        yield from items
        return
    before = window // 2
    after = window - 1 - before
    history = collections.deque(maxlen=window)   # boxes of the current run, oldest first
    pending = collections.deque()                # items of the current run not yet yielded
    emitted = 0                                  # items of the current run yielded so far
    run_len = 0
    run_track = None

    def value(j, boxes, first, n):
        """Smoothed box of run position j given run boxes[first...] (n known so far, run ended)."""
        picks = [boxes[min(max(j + t, 0), n - 1) - first] for t in range(-before, after + 1)]
        return np.round(np.mean(picks, axis=0)).astype(np.int64)

    def drain(ended: bool):
        nonlocal emitted
        boxes = list(history)
        first = run_len - len(boxes)
        while pending and (ended or emitted + after < run_len):
            i, f, _, t = pending.popleft()
            yield i, f, value(emitted, boxes, first, run_len), t
            emitted += 1

    for item in items:
        index, frame, box, track = item
        if box is None or track != run_track:
            yield from drain(ended=True)
            history.clear()
            emitted, run_len, run_track = 0, 0, None
            if box is None:
                yield item
                continue
            run_track = track
        history.append(box)
        run_len += 1
        pending.append(item)
        yield from drain(ended=False)
    yield from drain(ended=True)


def track_faces(frames: Iterable[np.ndarray], detector, opts: TrackingOptions, fps: float
                ) -> Iterator[Tuple[int, np.ndarray, Optional[Box]]]:
    """(index, frame, box or None) for each frame of ``frames``, in order, streaming. ``detector``:
    a face detector (``detect_faces``) or a :class:`KeyFrameDetector` wrapping one."""
    detect = detector if isinstance(detector, KeyFrameDetector) else KeyFrameDetector(detector, opts.detect_max_side)
    max_gap = None if opts.max_gap_s is None else int(round(opts.max_gap_s * fps))
    patience = int(round((DEFAULT_MAX_GAP_S if opts.max_gap_s is None else opts.max_gap_s) * fps))
    observed = _observe(frames, detect, opts, patience)
    for index, frame, box, _ in _smooth(_fill_gaps(observed, max_gap), opts.smooth_window):
        yield index, frame, box


def boxes_for_video(video_path: str, detector, opts: TrackingOptions, progress: bool = False) -> np.ndarray:
    """(N, 4) int64 boxes for every decoded frame of a video, every gap filled (preprocessing)."""
    from tqdm import tqdm
    from utils.video import VideoReader
    fill_all = dataclasses.replace(opts, max_gap_s=None)
    boxes = []
    with VideoReader(video_path) as reader:
        bar = tqdm(total=reader.num_frames, desc="detect faces", unit="frame", disable=not progress)
        for _, _, box in track_faces(reader, detector, fill_all, reader.fps):
            if box is None:
                raise no_face(video_path)
            boxes.append(box)
            bar.update()
        bar.close()
    return np.stack(boxes).astype(np.int64)
