"""Face boxes for a stream of frames: detection on key frames, one face followed, gaps.

- Detection runs on every ``detect_every``-th frame (and the last one), on a copy whose longest
  side is at most ``detect_max_side`` pixels (INTER_AREA; 0 keeps full resolution); boxes are mapped
  back to full resolution. While a face is followed, the copy is scaled down further so that the
  face's shorter side is about ``face_px`` pixels (a 250-px face needs no 640-px frame); a key frame
  on which that finds no continuation of the face is detected again at ``detect_max_side``.
- While the face moves smoothly the key frames spread out, up to ``detect_every * KEY_STRETCH``
  frames apart: each longer segment is checked cheaply (phase correlation of the face region between
  its first and middle frame, on the small copies) against the interpolated motion; a segment that
  fails is bisected like a disagreement, and the spacing falls back to ``detect_every``.
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
- A frame whose view shows no face (the first, then at most every ``PROBE_GAP`` frames while none is
  found) is searched at its own size for faces too small for the view, with a detector that can
  (``find_small_faces``: the cascade); once one is found, the views grow so that it is
  ``FINE_FACE_PX`` wide in them, and key frames search the region around the followed face.
- Boxes are smoothed by a centred moving average over ``smooth_window`` frames within a track,
  never across a gap or a cut.

Everything streams: at most ``detect_every * KEY_STRETCH * KEY_BATCH`` frames (the small copies,
not the frames), plus the gap and smoothing windows, are held.
"""
import collections
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Deque, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

from utils.errors import NoFaceError, TalkLipError, one_line

DEFAULT_DETECT_EVERY = 8
DEFAULT_DETECT_MAX_SIDE = 640
AGREE_IOU = 0.5      # two key frames this similar are interpolated without detecting between them
MATCH_IOU = 0.3      # a detection overlapping the followed face this much continues its track
KEY_BATCH = 1        # key frames detected in one call
KEY_STRETCH = 4      # while the motion is smooth, key frames are up to this many times detect_every apart
DEFAULT_MAX_GAP_S = 0.2
MIN_DETECT_SIDE = 32     # S3FD's smallest input side (its pool5 needs conv5_3 to be 2 px or more)
DEFAULT_FACE_PX = 64     # a followed face is detected at the scale where its shorter side is this long
SCALE_STEPS = 8          # ... rounded up to a power of 2 ** (1 / SCALE_STEPS): one clip gives the detector
                         # a few frame sizes, not one per key frame (each new size costs ~1 MB that
                         # torch's CPU convolutions keep for it: 90 MB over a 300 s clip unrounded)
MOTION_TOL = 0.02        # a stretched segment's middle may be off its interpolated place by this x face side
MOTION_TOL_MIN_PX = 2.0  # ... or this many pixels, whichever is more
MOTION_PATCH = 64        # side of the grey face patch the motion check correlates
PROBE_MAX_SIDE = 3840    # a frame is searched for faces too small for its view on a copy at most this long
PROBE_GAP = 24           # frames: a stretch without a face is searched so at most this often
FINE_FACE_PX = 48        # once such a face is found, the views are made so large that it is this wide in them

Box = np.ndarray     # (4,) int64 x1 y1 x2 y2


@dataclass
class TrackingOptions:
    detect_every: int = DEFAULT_DETECT_EVERY
    detect_max_side: int = DEFAULT_DETECT_MAX_SIDE   # 0: full resolution
    max_gap_s: Optional[float] = DEFAULT_MAX_GAP_S    # longest no-face gap filled; None: fill every gap
    smooth_window: int = 1
    follow: Optional[Tuple[float, float]] = None      # None: the largest face; (x, y): nearest this point
    face_px: int = DEFAULT_FACE_PX                    # 0: always detect at detect_max_side
    stretch: bool = True                              # spread key frames while the motion is smooth

    def __post_init__(self):
        if self.detect_every < 1:
            raise TalkLipError(f"--detect_every must be at least 1, got {self.detect_every}")
        if self.detect_max_side < 0:
            raise TalkLipError(f"--detect_max_side must be 0 (full resolution) or positive, got {self.detect_max_side}")
        if self.face_px < 0:
            raise TalkLipError(f"--detect_face_px must be 0 (off) or positive, got {self.face_px}")

    @property
    def adaptive(self) -> bool:
        """Scale and spacing follow the face; off in the original's mode (every frame, full resolution)."""
        return self.detect_every > 1 or self.detect_max_side > 0


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
    if not (math.isfinite(x) and math.isfinite(y)):
        raise TalkLipError(f"--follow needs a point 'X,Y' of finite pixel coordinates, got {text!r}")
    return x, y


def check_follow_point(point: Optional[Tuple[float, float]], width: int, height: int, source: str) -> None:
    """A --follow point must lie on the frame (0 <= x < width, 0 <= y < height)."""
    if point is not None and not (0 <= point[0] < width and 0 <= point[1] < height):
        raise TalkLipError(f"--follow {point[0]:g},{point[1]:g} lies outside the {width}x{height} frame of {source}: "
                           f"give a point on the face to dub (x from 0 to {width - 1}, y from 0 to {height - 1})")


def near_point(box: np.ndarray, point: Tuple[float, float]) -> bool:
    """``point`` lies on the face box grown by half its size on every side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    grow_x, grow_y = (x2 - x1) / 2.0, (y2 - y1) / 2.0
    return x1 - grow_x <= point[0] <= x2 + grow_x and y1 - grow_y <= point[1] <= y2 + grow_y


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = float(w) * float(h)
    union = float(a[2] - a[0]) * float(a[3] - a[1]) + float(b[2] - b[0]) * float(b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _shrink(images: List[np.ndarray], factor: float) -> Tuple[np.ndarray, np.ndarray]:
    """``images`` scaled by ``factor`` (INTER_AREA) when that makes them smaller, stacked, and the
    (x, y, x, y) factors that map their pixels back."""
    height, width = images[0].shape[:2]
    if factor >= 1.0:
        return np.stack(images), np.ones(4)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = np.stack([cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in images])
    return small, np.array([width / size[0], height / size[1]] * 2)


class KeyFrameDetector:
    """All faces of a frame as (n, 4) int64 boxes at full resolution, from a scaled-down copy.

    ``view(frame)`` is the copy the tracker keeps (longest side ``max_side``; the frame itself when
    ``max_side`` is 0 or the frame is smaller); ``detect_views(views, face_side, face_px)`` finds
    faces on views, scaled down further so that a face of shorter side ``face_side`` (full-resolution
    pixels) is ``face_px`` pixels or up to 9% more (the scale is rounded up to a power of 2 ** (1 /
    SCALE_STEPS), so that a face whose size wanders gives the detector a few frame sizes). Calling the
    detector on full frames does the first."""

    def __init__(self, detector, max_side: int, clock=None, pixel_aspect: float = 1.0):
        self.detector, self.max_side, self.clock = detector, max_side, clock
        self.pixel_aspect = pixel_aspect    # an anamorphic frame is detected on as displayed (x this wider)
        self.calls = 0          # frames detected on
        self.misses = 0         # of those, frames on which no face was found
        self.pixels = 0         # pixels the detector was given, in all
        self.back = np.ones(4)  # (x, y, x, y) from view pixels to frame pixels
        self.probes = 0         # frames searched for faces too small for the view (``probe``)
        self.coarse_px = 0.0    # once ``probe`` enlarged the views: faces under this many frame px are confirmed

    def view(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        if abs(self.pixel_aspect - 1.0) > 1e-3:          # the picture as displayed, then scaled down
            shown = width * self.pixel_aspect
            factor = min(1.0, self.max_side / max(height, shown)) if self.max_side else 1.0
            size = (max(1, round(shown * factor)), max(1, round(height * factor)))
            self.back = np.array([width / size[0], height / size[1]] * 2)
            return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        factor = self.max_side / max(height, width) if self.max_side else 1.0
        small, self.back = _shrink([frame], factor)
        return small[0]

    def _confirmed(self, view: np.ndarray, box: np.ndarray, always: bool = False) -> bool:
        """``box`` (frame px) on ``view`` is a face: large enough for the view before ``probe`` (unless ``always``),
        or ``confirm_face`` says so."""
        if not always and (box[2] - box[0]) * self.pixel_aspect >= self.coarse_px:
            return True
        on_view = box / self.back
        side = on_view[2] - on_view[0]            # the cascade's boxes are square before the chin is added
        return self.detector.confirm_face(view, (on_view[0], on_view[1], on_view[0] + side, on_view[1] + side))

    def __call__(self, frames: List[np.ndarray]) -> List[np.ndarray]:
        found = []
        for frame in frames:
            faces = self.detect_views([self.view(frame)])[0]
            found.append(faces if len(faces) else self.probe(frame))
        return found

    def probe(self, frame: np.ndarray) -> np.ndarray:
        """Faces too small for the view on a frame whose view found none, as (n, 4) int64 frame boxes.

        A view of ``max_side`` pixels shows a face of 150 px in a 4K frame at 25 px, the least the cascade
        finds; a detector with ``find_small_faces`` (the cascade) searches the frame itself (up to
        ``PROBE_MAX_SIDE``) for faces below what the view shows. When one is found, the views are made larger
        from then on, so that it is ``FINE_FACE_PX`` wide in them (at most the frame's own size), and the small
        faces found on them must pass the cascade's ``confirm_face``, as the probe's did. Call it only when no
        view at the old scale is still waiting for detection."""
        finder = getattr(self.detector, "find_small_faces", None)
        height, width = frame.shape[:2]
        shown = width * self.pixel_aspect
        longest = max(height, shown)
        if finder is None or not self.max_side or longest <= 1.5 * self.max_side:
            return np.zeros((0, 4), np.int64)
        started = time.perf_counter()
        scale = min(1.0, PROBE_MAX_SIDE / longest)
        size = (max(1, round(shown * scale)), max(1, round(height * scale)))
        image = frame if size == (width, height) else cv2.resize(
            frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        shown_px = 1.5 * getattr(self.detector, "min_size", 24) * longest / self.max_side   # the view finds these
        dets = finder(image, shown_px * scale)
        back = np.array([width / size[0], height / size[1]] * 2)
        boxes = np.clip(np.asarray(dets, np.float64).reshape(-1, 5)[:, :4] * back, 0,
                        [width, height, width, height]).astype(np.int64)
        self.probes += 1
        if len(boxes):
            side = min((boxes[0, 2] - boxes[0, 0]) * self.pixel_aspect, boxes[0, 3] - boxes[0, 1])
            self.coarse_px = max(self.coarse_px, shown_px)
            self.max_side = int(min(longest, math.ceil(longest * FINE_FACE_PX / max(side, 1))))
        if self.clock is not None:
            self.clock.add("detect", time.perf_counter() - started)
        return boxes

    def detect_views(self, views: List[np.ndarray], face_side: Optional[float] = None,
                     face_px: int = 0, near: Optional[Box] = None) -> List[np.ndarray]:
        """All faces of each view, as frame boxes. ``face_side``, ``face_px``: see the class. ``near``: the
        followed face's last box. On views enlarged by ``probe``, a face overlapping it continues the followed face
        unconfirmed (other small faces must pass ``confirm_face``), and with ``face_side`` only the region around it
        (its side on each side) is searched, as a smaller view would be (the tracker searches the whole view again
        where that finds no continuation)."""
        if near is not None and face_side and self.coarse_px:
            on_view = near / self.back
            side = max(on_view[2] - on_view[0], on_view[3] - on_view[1])
            found = []
            for view in views:
                x1, y1 = (int(max(0, v - side)) for v in on_view[:2])
                x2, y2 = int(min(view.shape[1], on_view[2] + side)), int(min(view.shape[0], on_view[3] + side))
                if x2 - x1 < MIN_DETECT_SIDE or y2 - y1 < MIN_DETECT_SIDE:
                    found += self._detect([view], [view], face_side, face_px, np.zeros(4), near)
                else:
                    found += self._detect([view[y1:y2, x1:x2]], [view], face_side, face_px,
                                          np.array([x1, y1, x1, y1], np.float64), near)
            return found
        return self._detect(views, views, face_side, face_px, np.zeros(4), near)

    def _detect(self, images: List[np.ndarray], views: List[np.ndarray], face_side: Optional[float], face_px: int,
                offset: np.ndarray, near: Optional[Box]) -> List[np.ndarray]:
        """Faces on ``images``: the views, or regions of them whose top-left corner is at ``offset`` (view px)."""
        started = time.perf_counter()
        factor = 1.0
        if face_side and face_px:
            factor = 2.0 ** (np.ceil(np.log2(face_px / (face_side / self.back[0])) * SCALE_STEPS) / SCALE_STEPS)
            factor = max(factor, MIN_DETECT_SIDE / min(images[0].shape[:2]))    # never below what S3FD takes
        small, back = _shrink(images, factor if factor < 0.9 else 1.0)
        height, width = (side * scale for side, scale in zip(views[0].shape[:2], self.back[1::-1]))
        whole = self.coarse_px and not offset.any()     # a whole view enlarged by probe: one search at all sizes
        try:
            if whole:
                detections = [self.detector.find_small_faces(image, max(image.shape[:2]), confirm=False)
                              for image in small]
            else:
                detections = self.detector.detect_faces(small)
        except RuntimeError as exc:
            raise TalkLipError(f"the face detector failed on a {small.shape[2]}x{small.shape[1]} view of the frame "
                               f"({one_line(exc)}): try --detect_face_px 0 or another detector") from None
        found = []
        for view, dets in zip(views, detections):
            boxes = (np.asarray(dets, np.float64).reshape(-1, 5)[:, :4] * back + offset) * self.back
            # the original clips at 0 and truncates; boxes past the frame are clipped to it too
            boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.int64)
            if self.coarse_px and len(boxes):    # views enlarged by probe: faces other than the followed confirmed
                keep = [(near is not None and iou(box, near) >= MATCH_IOU) or self._confirmed(view, box, whole)
                        for box in boxes]
                boxes = boxes[np.array(keep, bool)]
            found.append(boxes)
        self.calls += len(images)
        self.pixels += small.shape[0] * small.shape[1] * small.shape[2]
        self.misses += sum(len(boxes) == 0 for boxes in found)
        if self.clock is not None:
            self.clock.add("detect", time.perf_counter() - started)
        return found


@dataclass
class Sighting:
    """What the tracker knows of the followed face at one frame."""
    box: Optional[Box]            # its box on this frame; None: not seen here
    track: Optional[int]          # the track (shot) the box belongs to
    last_box: Optional[Box]       # its last box up to this frame (across gaps)
    last_track: Optional[int]
    last_index: int               # the frame where it was last seen


@dataclass
class TrackedFrame:
    """One frame on its way through the tracker's stages (observe -> fill gaps -> smooth)."""
    index: int
    box: Optional[Box]
    track: Optional[int]


class FaceBox(NamedTuple):
    """What ``track_faces`` yields per frame: its index and the followed face's box (or None)."""
    index: int
    box: Optional[Box]


class _Follower:
    """Chooses, among a frame's faces, the one that continues the followed face.

    A face overlapping the followed face's last box continues it. While the followed face has been
    missing for at most ``patience`` frames, other faces are ignored (a detector miss, a hand);
    after that, or when no face was followed yet, one is chosen by ``follow`` and a new track
    starts (a cut, or the person left)."""

    def __init__(self, follow, patience: int):
        self.follow, self.patience = follow, patience
        self.tracks = 0
        self.far_from_point = 0     # faces chosen by the --follow point although none was near it

    def choose(self, index: int, faces: np.ndarray, before: Optional[Sighting]) -> Sighting:
        if before is not None and before.last_box is not None:
            if len(faces):
                overlaps = [iou(face, before.last_box) for face in faces]
                best = int(np.argmax(overlaps))
                if overlaps[best] >= MATCH_IOU:
                    return Sighting(faces[best], before.last_track, faces[best], before.last_track, index)
            if index - before.last_index <= self.patience or not len(faces):
                return Sighting(None, None, before.last_box, before.last_track, before.last_index)
        if not len(faces):
            return Sighting(None, None, None, None, index)
        if self.follow is None:
            pick = int(np.argmax((faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])))
        else:
            pick = nearest_face(faces, self.follow)
            self.far_from_point += not near_point(faces[pick], self.follow)
        self.tracks += 1
        return Sighting(faces[pick], self.tracks, faces[pick], self.tracks, index)


def nearest_face(faces: np.ndarray, point: Tuple[float, float]) -> int:
    """Index of the face (row of (n, 4) x1 y1 x2 y2 boxes) whose centre is nearest ``point``."""
    centres = (faces[:, :2] + faces[:, 2:]) / 2.0
    return int(np.argmin(np.hypot(centres[:, 0] - point[0], centres[:, 1] - point[1])))


def _agree(a: Sighting, b: Sighting) -> bool:
    if a.box is None and b.box is None:
        return True
    return a.box is not None and b.box is not None and a.track == b.track and iou(a.box, b.box) >= AGREE_IOU


@dataclass
class _Anchor:
    """The last resolved key frame: already handed on, and the left end of the next window."""
    index: int
    view: np.ndarray
    seen: Sighting


def _continues(faces: np.ndarray, before: Sighting) -> bool:
    """Some face in ``faces`` continues the one last seen in ``before``."""
    return before.last_box is not None and any(iou(face, before.last_box) >= MATCH_IOU for face in faces)


def _grey_patch(view: np.ndarray, region: Tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = region
    patch = cv2.cvtColor(view[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    return cv2.resize(patch, (MOTION_PATCH, MOTION_PATCH), interpolation=cv2.INTER_AREA).astype(np.float32)


class KeyFrameTracker:
    """The followed face's box (or None) on every frame, from detections on key frames only.

    Frames are pushed; their small copies (``KeyFrameDetector.view``) are held until ``step *
    KEY_BATCH`` have arrived after the anchor; then the key frames among them are detected in one
    batch and ``_resolve`` fills the frames between. ``step`` is ``detect_every``, doubled after each
    window resolved without a disagreement (up to ``KEY_STRETCH`` times), reset by one. State: the
    anchor, the views held after it, and the step."""

    def __init__(self, detect: KeyFrameDetector, opts: TrackingOptions, patience: int):
        self.detect, self.base = detect, opts.detect_every
        self.step = self.base
        self.max_step = self.base * KEY_STRETCH if opts.adaptive and opts.stretch else self.base
        self.face_px = opts.face_px if opts.adaptive else 0
        self.follower = _Follower(opts.follow, patience)
        self.anchor: Optional[_Anchor] = None
        self.held: List[np.ndarray] = []
        self.last: Optional[np.ndarray] = None      # the last frame pushed (for KeyFrameDetector.probe)
        self.probed = -PROBE_GAP                    # the last frame probed
        self.rough = False          # the current window needed a bisection

    def push(self, frame: np.ndarray) -> List[TrackedFrame]:
        """The frames resolved by this one (often none: it is held)."""
        view = self.detect.view(frame)
        if self.anchor is None:
            faces = self.detect.detect_views([view])[0]
            if len(faces) == 0:
                faces, self.probed = self.detect.probe(frame), 0
                view = self.detect.view(frame)       # larger, when the probe found a small face
            seen = self.follower.choose(0, faces, None)
            self.anchor = _Anchor(0, view, seen)
            return [TrackedFrame(0, seen.box, seen.track)]
        self.held.append(view)
        self.last = frame
        return self._flush(final=False) if len(self.held) >= self.step * KEY_BATCH else []

    def finish(self) -> List[TrackedFrame]:
        """The frames still held, the last one detected as a key frame."""
        return self._flush(final=True)

    def _face_side(self, seen: Sighting) -> Optional[float]:
        box = seen.last_box
        return float(min(box[2] - box[0], box[3] - box[1])) if self.face_px and box is not None else None

    def _flush(self, final: bool) -> List[TrackedFrame]:
        count = len(self.held) if final else (len(self.held) // self.step) * self.step
        if count == 0:
            return []
        window = [self.anchor.view] + self.held[:count]             # position 0: the anchor
        keys = list(range(self.step, count, self.step)) + [count]
        hint = self._face_side(self.anchor.seen)
        faces = dict(zip(keys, self.detect.detect_views([window[k] for k in keys], hint, self.face_px,
                                                        self.anchor.seen.last_box)))
        self.rough = False
        seen = self._resolve(window, keys, faces, scaled=set(keys) if hint else set())
        first = self.anchor.index
        self.held = self.held[count:]
        if seen[count].box is None and not self.held and first + count - self.probed >= PROBE_GAP:
            faces, self.probed = self.detect.probe(self.last), first + count    # a face too small for the view?
            if len(faces):
                seen[count] = self.follower.choose(first + count, faces, seen[count])
                window[-1] = self.detect.view(self.last)
        self.anchor = _Anchor(first + count, window[-1], seen[count])
        self.step = self.base if self.rough else min(self.step * 2, self.max_step)
        return [TrackedFrame(first + k, seen[k].box, seen[k].track) for k in range(1, count + 1)]

    def _resolve(self, window: List[np.ndarray], keys: List[int], faces: Dict[int, np.ndarray],
                 scaled: set) -> Dict[int, Sighting]:
        """A sighting for every position of ``window`` (absolute index: anchor's + position), given the
        key frames' detections ``faces`` (those at positions ``scaled`` made at the face's scale).
        Between two positions whose sightings agree (and, for a segment longer than detect_every,
        whose middle frame moved as interpolated), boxes are interpolated; otherwise the middle is
        detected too and both halves resolved the same way, in frame order (an explicit stack)."""
        first = self.anchor.index
        seen: Dict[int, Sighting] = {0: self.anchor.seen}
        todo = [(a, b) for a, b in zip([0] + keys[:-1], keys)][::-1]
        while todo:
            a, b = todo.pop()
            if b not in faces:
                hint = self._face_side(seen[a])
                faces[b] = self.detect.detect_views([window[b]], hint, self.face_px, seen[a].last_box)[0]
                if hint:
                    scaled.add(b)
            if b in scaled and not _continues(faces[b], seen[a]):   # lost at the small scale: look properly
                faces[b] = self.detect.detect_views([window[b]], near=seen[a].last_box)[0]
                scaled.discard(b)
            seen[b] = self.follower.choose(first + b, faces[b], seen[a])
            if b - a > 1 and not (_agree(seen[a], seen[b]) and self._smooth(window, a, b, seen)):
                self.rough = True
                middle = (a + b) // 2
                todo += [(middle, b), (a, middle)]
                continue
            for k in range(a + 1, b):
                if seen[a].box is None:
                    seen[k] = Sighting(None, None, seen[a].last_box, seen[a].last_track, seen[a].last_index)
                else:
                    w = (k - a) / (b - a)
                    box = np.round((1 - w) * seen[a].box + w * seen[b].box).astype(np.int64)
                    seen[k] = Sighting(box, seen[a].track, box, seen[a].track, first + k)
        return seen

    def _smooth(self, window: List[np.ndarray], a: int, b: int, seen: Dict[int, Sighting]) -> bool:
        """For a segment longer than ``detect_every`` with the face on both ends: the face region's
        content moved from ``a`` to the middle frame as the interpolation says (phase correlation of
        grey patches on the views), within MOTION_TOL of the face's side."""
        if b - a <= self.base or seen[a].box is None:
            return True
        box_a, box_b, middle = seen[a].box, seen[b].box, (a + b) // 2
        expected = ((middle - a) / (b - a)) * ((box_b[:2] + box_b[2:]) - (box_a[:2] + box_a[2:])) / 2.0
        back = self.detect.back[:2]
        height, width = window[a].shape[:2]
        grow = (box_a[2:] - box_a[:2]) * 0.1
        x1, y1 = np.maximum(0, np.floor((box_a[:2] - grow) / back)).astype(int)
        x2, y2 = np.minimum([width, height], np.ceil((box_a[2:] + grow) / back)).astype(int)
        if x2 - x1 < 8 or y2 - y1 < 8:
            return True
        (dx, dy), response = cv2.phaseCorrelate(_grey_patch(window[a], (x1, y1, x2, y2)),
                                                _grey_patch(window[middle], (x1, y1, x2, y2)))
        measured = np.array([dx * (x2 - x1), dy * (y2 - y1)]) / MOTION_PATCH * back
        side = float(min(box_a[2] - box_a[0], box_a[3] - box_a[1]))
        return response > 0.1 and bool(np.all(np.abs(measured - expected) <= max(MOTION_TOL_MIN_PX, MOTION_TOL * side)))


class _GapFiller:
    """Gives short gaps boxes: interpolated inside a track, the nearest box at the clip's ends; a gap
    longer than ``max_gap`` frames (None: no limit), or one between two tracks, keeps None."""

    def __init__(self, max_gap: Optional[int]):
        self.max_gap = max_gap
        self.run: List[TrackedFrame] = []          # frames without a box since the last boxed frame
        self.last: Optional[TrackedFrame] = None   # the last boxed frame
        self.overflow = False                      # the current run outgrew max_gap: it passes through

    def push(self, item: TrackedFrame) -> List[TrackedFrame]:
        if item.box is None:
            if self.overflow:
                return [item]
            self.run.append(item)
            if self.max_gap is not None and len(self.run) > self.max_gap:
                out, self.run, self.overflow = self.run, [], True
                return out
            return []
        out = self._close_run(item) + [item]
        self.overflow, self.last = False, item
        return out

    def finish(self) -> List[TrackedFrame]:
        last = self.last
        out = [dataclasses.replace(gap, box=last.box if last else None, track=last.track if last else None)
               for gap in self.run]
        self.run = []
        return out

    def _close_run(self, item: TrackedFrame) -> List[TrackedFrame]:
        """The held gap, filled now that ``item`` ends it."""
        run, last, self.run = self.run, self.last, []
        if not run:
            return []
        if last is None:
            fill = [item.box] * len(run)
        elif last.track == item.track or self.max_gap is None:
            fill = [np.round(last.box + (item.box - last.box) * (k + 1) / (len(run) + 1)).astype(np.int64)
                    for k in range(len(run))]
        else:
            fill = [None] * len(run)
        return [dataclasses.replace(gap, box=box, track=item.track if box is not None else None)
                for gap, box in zip(run, fill)]


class _BoxSmoother:
    """Centred moving average of boxes over ``window`` frames within one run of a track (edges
    repeated), streaming: a frame leaves once the ``window // 2`` boxes after it are known."""

    def __init__(self, window: int):
        self.before = window // 2
        self.after = window - 1 - self.before
        self.history: Deque[Box] = collections.deque(maxlen=window)   # the run's last boxes, oldest first
        self.pending: Deque[TrackedFrame] = collections.deque()        # the run's frames not yet handed on
        self.emitted = 0          # the run's frames handed on so far
        self.run_len = 0          # the run's frames seen so far
        self.run_track: Optional[int] = None

    def push(self, item: TrackedFrame) -> List[TrackedFrame]:
        out: List[TrackedFrame] = []
        if item.box is None or item.track != self.run_track:
            out += self._drain(ended=True)
            self.history.clear()
            self.emitted, self.run_len, self.run_track = 0, 0, item.track if item.box is not None else None
            if item.box is None:
                return out + [item]
        self.history.append(item.box)
        self.run_len += 1
        self.pending.append(item)
        return out + self._drain(ended=False)

    def finish(self) -> List[TrackedFrame]:
        return self._drain(ended=True)

    def _drain(self, ended: bool) -> List[TrackedFrame]:
        out = []
        boxes, first = list(self.history), self.run_len - len(self.history)   # boxes[0] is run position first
        while self.pending and (ended or self.emitted + self.after < self.run_len):
            j = self.emitted
            picks = [boxes[min(max(j + t, 0), self.run_len - 1) - first] for t in range(-self.before, self.after + 1)]
            out.append(dataclasses.replace(self.pending.popleft(), box=np.round(np.mean(picks, axis=0)).astype(np.int64)))
            self.emitted += 1
        return out


class FaceTracker:
    """Push frames in order, get ``FaceBox``es back in order (a few frames later): key-frame
    detection and bisection (``KeyFrameTracker``), then gap filling, then smoothing. ``detector``: a
    face detector (``detect_faces``) or a :class:`KeyFrameDetector` wrapping one."""

    def __init__(self, detector, opts: TrackingOptions, fps: float, pixel_aspect: float = 1.0):
        detect = detector if isinstance(detector, KeyFrameDetector) else KeyFrameDetector(
            detector, opts.detect_max_side, pixel_aspect=pixel_aspect)
        max_gap = None if opts.max_gap_s is None else int(round(opts.max_gap_s * fps))
        patience = int(round((DEFAULT_MAX_GAP_S if opts.max_gap_s is None else opts.max_gap_s) * fps))
        self.keys = KeyFrameTracker(detect, opts, patience)
        self.stages = [self.keys, _GapFiller(max_gap)]
        if opts.smooth_window > 1:
            self.stages.append(_BoxSmoother(opts.smooth_window))

    @property
    def far_from_point(self) -> int:
        """Tracks started on a face chosen by the --follow point that lies far from it (a detector miss
        on the face at the point?)."""
        return self.keys.follower.far_from_point

    def push(self, frame: np.ndarray) -> List[FaceBox]:
        items = self.stages[0].push(frame)
        for stage in self.stages[1:]:
            items = [out for item in items for out in stage.push(item)]
        return [FaceBox(item.index, item.box) for item in items]

    def finish(self) -> List[FaceBox]:
        items: List[TrackedFrame] = []
        for stage in self.stages:          # what a stage still holds goes through the stages after it
            items = [out for item in items for out in stage.push(item)] + stage.finish()
        return [FaceBox(item.index, item.box) for item in items]


def track_faces(frames: Iterable[np.ndarray], detector, opts: TrackingOptions, fps: float,
                pixel_aspect: float = 1.0) -> Iterator[FaceBox]:
    """(index, box or None) for each frame of ``frames``, in order, streaming; an anamorphic video's faces
    are found on its picture as displayed (``pixel_aspect``), the boxes given in its stored pixels."""
    tracker = FaceTracker(detector, opts, fps, pixel_aspect)
    for frame in frames:
        yield from tracker.push(frame)
    yield from tracker.finish()


def boxes_for_video(video_path: str, detector, opts: TrackingOptions, progress: bool = False) -> np.ndarray:
    """(N, 4) int64 boxes for every decoded frame of a video, every gap filled (preprocessing)."""
    from tqdm import tqdm
    from utils.video import VideoReader
    fill_all = dataclasses.replace(opts, max_gap_s=None)
    boxes = []
    with VideoReader(video_path) as reader:
        bar = tqdm(total=reader.num_frames, desc="detect faces", unit="frame", disable=not progress)
        for _, box in track_faces(reader, detector, fill_all, reader.fps, reader.info.pixel_aspect):
            if box is None:
                raise no_face(video_path)
            boxes.append(box)
            bar.update()
        bar.close()
    return np.stack(boxes).astype(np.int64)
