"""Which face the generator is shown as its reference (``--reference``).

The generator sees two pictures of the face: the frame's own with the lower half masked, and a
reference, whole. The original dub passes the frame's own crop (``own``), so the source speaker's
mouth, moving with the old speech, is in the generator's input and can leak into the dub. One fixed
reference removes that: ``first`` (the first frame with the face), ``closed`` (the frame whose mouth is
most closed, read as the mouth window's darkness in the crop: lips and an open mouth are darker than
skin), or a frame number ``N`` of the source.
"""
from typing import Optional, Tuple

import numpy as np

from dubbing.follower import FaceFollower
from dubbing.source import FaceSource
from face_detection.boxes import crop_face
from models.talklip import FACE_SIZE
from preparation.mouth_pixels import mouth_darkness
from utils.errors import TalkLipError
from utils.video import FrameSeeker

REFERENCE_CHOICES = ("own", "first", "closed")
MOUTH_IN_CROP = (0.5, 0.75)       # the mouth's centre in a face crop, as fractions of its width and height
SCAN_FRAMES = 32                  # frames decoded at a time while looking for the most closed mouth


def check_reference(spec: str) -> str:
    """``spec`` if it is one of REFERENCE_CHOICES or a frame number (0 or more); else a one-line error."""
    if spec in REFERENCE_CHOICES or (spec.isdigit() and spec == str(int(spec))):
        return spec
    raise TalkLipError(f"--reference must be own, first, closed or a frame number (0, 1, ...), got {spec!r}")


def mouth_openness(crop: np.ndarray) -> float:
    """How open the mouth of a face crop looks: the darkness of the window at MOUTH_IN_CROP."""
    height, width = crop.shape[:2]
    return mouth_darkness(crop, (MOUTH_IN_CROP[0] * width, MOUTH_IN_CROP[1] * height), (0, 0, width, height))


def choose_reference(spec: str, source: FaceSource, follower: FaceFollower) -> Tuple[Optional[np.ndarray], Optional[int]]:
    """(the reference crop, the frame of the source pass it comes from) for ``spec``; (None, None) for ``own``
    (each frame is its own reference). ``closed`` and a frame number look at the source's whole first
    pass (the face followed to its end; ``closed`` decodes it once more)."""
    check_reference(spec)
    if spec == "own":
        return None, None
    if spec == "first":
        position = next(p for p in range(len(follower.boxes)) if follower.boxes[p] is not None)
    elif spec == "closed":
        position = most_closed(source, follower)
    else:
        position = int(spec)
        track = follower.track()
        if position >= track.frames:
            raise TalkLipError(f"--reference {spec}: {source.path} has {track.frames} frames (0 to {track.frames - 1})")
        if track.boxes[position] is None:
            raise TalkLipError(f"--reference {spec}: no face was found on frame {position} of {source.path}; "
                               f"choose a frame that shows it, or --reference first")
    return crop_at(source, follower, [position])[0], position


def crop_at(source: FaceSource, follower: FaceFollower, positions) -> np.ndarray:
    """The face crops of these positions of the source pass (each with a face box)."""
    if source.image is not None:
        return np.stack([crop_face(source.image, follower.boxes[p], FACE_SIZE) for p in positions])
    with FrameSeeker(source.path) as seeker:
        return _crops(seeker, follower, positions)


def _crops(seeker: FrameSeeker, follower: FaceFollower, positions) -> np.ndarray:
    frames = seeker.get(np.array([follower.source_index[p] for p in positions], np.int64))
    return np.stack([crop_face(frame, follower.boxes[p], FACE_SIZE) for frame, p in zip(frames, positions)])


def most_closed(source: FaceSource, follower: FaceFollower) -> int:
    """The position of the pass whose face crop has the least open mouth (``mouth_openness``)."""
    track = follower.track()
    faced = [p for p in range(track.frames) if track.boxes[p] is not None]
    best, best_value = faced[0], np.inf
    if source.image is not None:
        return best
    with FrameSeeker(source.path) as seeker:          # one decoder for the whole scan, a chunk at a time
        for start in range(0, len(faced), SCAN_FRAMES):
            positions = faced[start:start + SCAN_FRAMES]
            for crop, p in zip(_crops(seeker, follower, positions), positions):
                value = mouth_openness(crop)
                if value < best_value:
                    best, best_value = p, value
    return best
