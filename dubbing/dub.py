"""Dubbing: a face video (or still) and new speech in, the lip-synced video out.

Read top to bottom: ``dub`` opens the speech (``Speech``) and the source (``open_face_source``), looks
for the first face (``FaceFollower.first_face``), then ``render_dub`` writes the dub in one pass: the
speech is encoded window by window as the frames reach it, and the face is followed a few frames ahead
of the frames being generated (on its own decoder), so the first frame comes out after one audio window
and a few detections, whatever the length, and memory does not grow with it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from dubbing.follower import FaceFollower
from dubbing.options import StageProgress, SynthesisOptions
from dubbing.reference import choose_reference
from dubbing.render import render_into
from dubbing.source import FaceSource, decodable_stream, open_face_source
from dubbing.speech import Speech
from face_detection.framing import framing_for
from face_detection.tracking import TrackingOptions, check_follow_point
from models.talklip import TalkLip
from utils.audio import SpeechSamples
from utils.pipeline import BackgroundWriter, StageClock
from utils.timeline import frame_feature_rows, ping_pong
from utils.video import FrameSeeker, VideoWriter

SPILL_BYTES = 4 << 30          # a video replayed back and forth is kept on disk up to this size (24 s at 1080p)
CHUNK_BYTES = 24 << 20         # frames in one chunk at most (8 at 720p, 3 at 1080p, 1 at 4K); up to ~4 chunks are in flight


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
        run = DubRun(out_path, audio_path, workdir, clock, started)
        speech = Speech.of_samples(generator, samples, opts, clock)
        source = open_face_source(decodable_stream(video_path, workdir))
        check_follow_point(tracking.follow, source.width, source.height, video_path)
        num_out = speech.frames_at(source.fps)
        read_ahead = max(1, min(opts.read_ahead, frames_per_chunk(opts, source.width, source.height)))
        framing, framing_note = framing_for(getattr(generator, "face_framing", None), getattr(detector, "name", ""))
        follower = FaceFollower(source, num_out, detector, tracking, clock, read_ahead, strict, opts.release_memory,
                                framing)
        try:
            speech.encode_first_window_ahead()         # the speech's first window beside the face search
            follower.first_face(StageProgress("detecting faces", min(num_out, source.frames_hint(num_out)),
                                              opts.progress, opts.on_progress))
            reference, reference_frame = choose_reference(opts.reference, source, follower)
            faced, first_frame_s = render_dub(generator, source, follower, speech, run, opts, reference)
            track = follower.track()
        finally:
            follower.close()
            speech.close()
    order = ping_pong(num_out, track.frames)
    return DubResult(frames=num_out, fps=source.fps, duration_s=speech.duration_s, source_frames=track.frames,
                     declared_s=source.declared_s,
                     decoded_frames=track.decoded_frames, damaged=track.damaged, frames_with_face=faced,
                     detected_frames=track.detected_frames, detection_misses=track.detection_misses,
                     seconds=clock.report(), with_face=np.array([track.boxes[i] is not None for i in order]),
                     first_frame_s=first_frame_s, detected_pixels=follower.detect.pixels,
                     far_from_point=track.far_from_point, reference_frame=reference_frame, framing=framing,
                     framing_note=framing_note)


@dataclass(frozen=True)
class DubRun:
    """One dub under way: where it is written (the speech's file muxed in as its sound), its temporary
    folder, its stage clock, and when the call began (``time.perf_counter``)."""
    out_path: str
    audio_path: str
    workdir: Optional[str]
    clock: StageClock
    started: float


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
    reference_frame: Optional[int] = None   # the source frame whose face was the reference (None: each its own)
    framing: Optional[Tuple[float, ...]] = None   # the generator's face framing the boxes were mapped by (None: as found)
    framing_note: Optional[str] = None      # why the generator's recorded framing was not used


def render_dub(generator: TalkLip, source: FaceSource, follower: FaceFollower, speech: Speech, run: DubRun,
               opts: SynthesisOptions, reference: Optional[np.ndarray] = None) -> Tuple[int, Optional[float]]:
    """Write the dub: ``speech``'s length at the source's frame rate, every frame with the face given a
    generated one. Frames are decoded by index and the face followed ahead in this thread, between
    chunks (the detector and the generator never hold activations at the same time: on 2 cores a
    reader thread doing both made the dub no faster and its peak memory ~150 MB higher); the
    follower's own decoding and the encoding run in threads. ``reference``: the generator's reference
    face for every frame (None: each frame's own crop). Returns the frames that got a face and
    the seconds from ``run.started`` to the first frame handed to the encoder."""
    clock = run.clock
    num_out = speech.frames_at(source.fps)
    rows = frame_feature_rows(num_out, source.fps, speech.rows)
    chunk = frames_per_chunk(opts, source.width, source.height)
    bar = StageProgress("generating", num_out, opts.progress, opts.on_progress)
    first = []
    with VideoWriter(run.out_path, source.fps, source.width, source.height, audio_path=run.audio_path,
                     crf=opts.crf, sar=source.sar) as writer, \
            BackgroundWriter(writer, maxsize=1, clock=clock) as out:
        spill = spill_file(source, num_out, run.workdir) if run.workdir else None
        items = dub_frames(source, follower, rows, chunk, clock, spill)

        def on_chunk(frames: int) -> None:
            if not first:
                first.append(time.perf_counter() - run.started)
            bar.update(frames)

        faced = render_into(out, generator, items, speech.embeddings, opts, clock, reference=reference, bar=on_chunk,
                            chunk_frames=chunk)
        bar.close()
        if opts.on_progress is not None:
            opts.on_progress("encoding", num_out, num_out)      # the last frames and the sound go in
    return faced, (first[0] if first else None)


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
