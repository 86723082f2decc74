"""Video decoding and encoding; the only module that touches video files.

Reading streams frames (BGR uint8, as OpenCV decodes them) without holding a video in
memory. Writing pipes raw frames to the bundled ffmpeg, which encodes H.264 (yuv420p) and
muxes an optional audio track as AAC, into a temporary file renamed into place at the end.
"""
import os
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Iterator, Optional

import cv2
import numpy as np

from utils.errors import MediaError
from utils.ffmpeg import ffmpeg_exe, last_error_line
from utils.fileio import atomic_output


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    num_frames: int     # as the container reports it; decoding may yield fewer on a damaged file
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


def _corrupt(path: str, why: str) -> MediaError:
    return MediaError(f"cannot decode video {path}: {why}; re-encode it (e.g. with ffmpeg) "
                      f"or remove it from the file list")


def cut_short(path: str, decoded: int, declared: int) -> MediaError:
    """The error for a video that decodes to fewer frames than its container declares."""
    return MediaError(f"{path} decodes to {decoded} of the {declared} frames its container declares "
                      f"(damaged or cut short): re-encode or re-download it")


class VideoReader:
    """Streaming frame reader: ``for frame in VideoReader(path)`` yields (H, W, 3) uint8 BGR.

    ``fps``, ``num_frames``, ``width`` and ``height`` are known as soon as it is opened.
    Raises MediaError for a missing, unreadable or empty file.
    """

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise MediaError(f"video file {path} does not exist: check --video_root and the file list")
        self.path = path
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            raise _corrupt(path, "not a readable video container")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if not fps or fps <= 0 or count <= 0 or width <= 0 or height <= 0:
            self._cap.release()
            raise _corrupt(path, "no video stream with frames")
        self.info = VideoInfo(path, float(fps), count, width, height)
        self._started = False
        self.last_time_s = 0.0          # timestamp of the frame last decoded

    fps = property(lambda self: self.info.fps)
    num_frames = property(lambda self: self.info.num_frames)
    width = property(lambda self: self.info.width)
    height = property(lambda self: self.info.height)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._started:
            raise RuntimeError("a VideoReader can be iterated once; open the file again")
        self._started = True
        decoded = 0
        try:
            while True:
                ok, frame = self._cap.read()
                if not ok:
                    break
                self.last_time_s = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                decoded += 1
                yield frame
        finally:
            self._cap.release()
        if decoded == 0:
            raise _corrupt(self.path, "no frame could be decoded")

    def resampled(self, rate: Optional[float] = None) -> Iterator[np.ndarray]:
        """Frames at a constant ``rate`` (default: the container's average frame rate), placed by
        their timestamps: where a variable-frame-rate input holds a frame longer it is repeated
        (as a copy), where it packs frames closer one is dropped, so a frame shown at 1.00 s in the
        input is at 1.00 s in the output. A constant-rate input yields every frame once.
        ``self.source_index`` lists the decoded index of each frame yielded."""
        rate = rate or self.fps
        self.source_index = []
        slot, previous, previous_index, shown, start = 0, None, -1, False, None
        for index, frame in enumerate(self):
            start = self.last_time_s if start is None else start
            time_s = self.last_time_s - start
            while previous is not None and slot / rate < time_s - 0.5 / rate:
                yield previous.copy() if shown else previous
                self.source_index.append(previous_index)
                shown, slot = True, slot + 1
            previous, previous_index, shown = frame, index, False
        if previous is not None:
            yield previous.copy() if shown else previous
            self.source_index.append(previous_index)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield (B, H, W, 3) uint8 arrays of up to ``batch_size`` consecutive frames."""
        batch = []
        for frame in self:
            batch.append(frame)
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)

    def close(self) -> None:
        self._cap.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def probe_video(path: str) -> VideoInfo:
    """Frame rate, frame count and size of a video without decoding it."""
    reader = VideoReader(path)
    reader.close()
    return reader.info


class VideoWriter:
    """Encode BGR uint8 frames to an H.264 mp4, optionally muxing an audio file (any format).

    Use as a context manager; the file appears under ``path`` only when the block ends
    without an exception. Even sizes are encoded yuv420p (plays everywhere); an odd width or height
    is kept exactly by encoding yuv444p (4:2:0 chroma needs even sizes), which ffmpeg-based players
    (VLC, mpv) play but some browsers do not.
    """

    def __init__(self, path: str, fps: float, width: int, height: int,
                 audio_path: Optional[str] = None, crf: int = 18, preset: str = "veryfast"):
        if audio_path is not None and not os.path.isfile(audio_path):
            raise MediaError(f"audio file {audio_path} does not exist: check the path")
        self.path, self.fps, self.width, self.height = path, fps, width, height
        self.audio_path, self.crf, self.preset = audio_path, crf, preset
        self.frames_written = 0
        self._atomic = None
        self._proc = None
        self._log = None

    def __enter__(self):
        self._atomic = atomic_output(self.path)
        tmp = self._atomic.__enter__()
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{self.width}x{self.height}",
               "-framerate", repr(float(self.fps)), "-i", "-"]
        if self.audio_path:
            cmd += ["-i", self.audio_path, "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
        pix_fmt = "yuv420p" if self.width % 2 == 0 and self.height % 2 == 0 else "yuv444p"
        cmd += ["-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", pix_fmt,
                "-movflags", "+faststart", "-f", "mp4", tmp]
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=self._log)
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 BGR frame."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be ({self.height}, {self.width}, 3) uint8, "
                             f"got {frame.shape} {frame.dtype}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            raise self._failure() from None
        self.frames_written += 1

    def write_batch(self, frames: np.ndarray) -> None:
        for frame in frames:
            self.write(frame)

    def _failure(self) -> MediaError:
        self._proc.wait()
        self._log.seek(0)
        return MediaError(f"ffmpeg could not encode {self.path}: {last_error_line(self._log.read())}")

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._proc.stdin.close()
                if self._proc.wait() != 0:
                    raise self._failure()
                if self.frames_written == 0:
                    raise MediaError(f"no frames were written to {self.path}")
            else:
                self._proc.kill()
                self._proc.wait()
        except BaseException as err:
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        finally:
            self._log.close()
        self._atomic.__exit__(exc_type, exc, tb)
        return False


def extract_audio(video_path: str, wav_path: str, rate: int = 16000) -> None:
    """Write a video's audio track as 16-bit mono WAV at ``rate`` (atomically)."""
    from utils.ffmpeg import run_ffmpeg
    if not os.path.isfile(video_path):
        raise MediaError(f"video file {video_path} does not exist: check --video_root and the file list")
    with atomic_output(wav_path) as tmp:
        run_ffmpeg(["-i", video_path, "-vn", "-map", "0:a:0", "-ac", "1", "-ar", str(rate),
                    "-c:a", "pcm_s16le", "-f", "wav", tmp], source=video_path)
