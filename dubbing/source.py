"""The face video or still a dub starts from: which stream is decoded and how, its size and frame rate.

``decodable_stream`` hands the decoder a file it reads as it should (the real video stream, converted to
BT.709 SDR when it is HDR or BT.2020); ``open_face_source`` opens it as a ``FaceSource``. Stills larger
than H.264 can carry are read reduced.
"""
import itertools
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import cv2
import numpy as np

from utils.errors import MediaError, say_on_stderr
from utils.video import (SourceFrame, VideoReader, colour_conversion, convert_video_stream, keep_video_stream,
                         real_video_stream)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STILL_IMAGE_FPS = 25.0


def is_image(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


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


@dataclass
class FaceSource:
    """The video (or still image) whose face is dubbed."""
    path: str
    fps: float
    width: int
    height: int
    declared_s: Optional[float] = None    # the video stream's declared duration
    image: Optional[np.ndarray] = None    # the picture, for a still
    packets: Optional[int] = None         # without a declared duration (a streamed webm): its video packets
    sar: Tuple[int, int] = (1, 1)         # sample aspect ratio: an anamorphic video's, kept on the dub

    @property
    def pixel_aspect(self) -> float:
        return self.sar[0] / self.sar[1]

    def frames_hint(self, count: int) -> int:
        """About how many frames one forward pass over ``count`` frames will see (for progress, and whether
        the frames of the first pass are kept for the passes back and forth)."""
        if self.image is not None:
            return 1
        if self.declared_s is None:
            return count if self.packets is None else max(1, min(count, self.packets))
        return max(1, min(count, int(round(self.declared_s * self.fps))))

    def forward(self, count: int) -> Tuple[Optional[VideoReader], Iterator[SourceFrame]]:
        """One pass over its first ``count`` frames at the constant rate ``fps`` (a still: once)."""
        if self.image is not None:
            return None, iter([SourceFrame(0, self.image)])
        reader = VideoReader(self.path, allow_truncated=True)
        return reader, itertools.islice(reader.resampled(), count)


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
        return FaceSource(path, reader.fps, reader.width, reader.height, reader.info.duration_s,
                          packets=reader.num_frames if reader.info.duration_s is None else None, sar=reader.info.sar)
