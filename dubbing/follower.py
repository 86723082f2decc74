"""Following the dubbed face through one forward pass over the source, a few frames ahead of the frames
being generated, on a decoder thread of its own (``FaceFollower``); what it found (``FaceTrack``)."""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from dubbing.options import StageProgress
from dubbing.source import FaceSource
from face_detection.framing import frame_box
from face_detection.tracking import FaceTracker, KeyFrameDetector, TrackingOptions, no_face
from utils.pipeline import StageClock, in_background, release_free_memory
from utils.timeline import ping_pong


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

    def __getattr__(self, name):
        """The rest of the detector (the cascade's ``find_small_faces``, ``confirm_face``, ``min_size``)."""
        return getattr(self.__dict__["detector"], name)


class FaceFollower:
    """Follows the face through one forward pass over the source's first ``count`` frames, decoding
    (in a thread) only as far as asked: ``box(position)`` returns the box of that frame of the pass,
    decoding and tracking up to it first. ``first_face()`` looks for the first frame with the face and
    raises when there is none (before anything is generated or written). ``track()`` is the
    finished pass (``FaceTrack``). ``release_memory``: the detector is a ``HeapTrimmedDetector``. ``framing``: each
    box found is mapped to the crop the generator learnt of such a face (face_detection.framing)."""

    def __init__(self, source: FaceSource, count: int, detector, tracking: TrackingOptions, clock: StageClock,
                 read_ahead: int = 8, strict: bool = False, release_memory: bool = False,
                 framing: Optional[Sequence[float]] = None):
        self.source, self.strict, self.framing = source, strict, framing
        self.reader, frames = source.forward(count)
        self.frames = in_background(clock.timed("decode", frames), read_ahead, name="decoder")
        detector = HeapTrimmedDetector(detector) if release_memory else detector
        self.detect = KeyFrameDetector(detector, tracking.detect_max_side, clock, pixel_aspect=source.pixel_aspect)
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
                self.boxes += [self._framed(found.box) for found in self.tracker.finish()]
                self._finish()
                return
            self.source_index.append(frame.index)
            self.boxes += [self._framed(found.box) for found in self.tracker.push(frame.image)]

    def _framed(self, box: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The crop the generator learnt of the face the detector boxed (``framing``; face_detection.framing),
        within the frame."""
        if box is None or self.framing is None:
            return box
        framed = frame_box(box, self.framing)
        framed[[0, 2]] = np.clip(framed[[0, 2]], 0, self.source.width)
        framed[[1, 3]] = np.clip(framed[[1, 3]], 0, self.source.height)
        return framed

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
