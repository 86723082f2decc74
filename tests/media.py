"""Small media files the hardening tests make: a moving head, a tone, ffmpeg remuxes and trims."""
import subprocess

import cv2
import numpy as np
import skimage.data
import soundfile

from utils.audio import AUDIO_RATE_HZ
from utils.ffmpeg import ffmpeg_exe
from utils.video import VideoWriter


def head_frames(count, size=160):
    photo = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    head = cv2.resize(photo[0:300, 100:360], (130, 150))
    frames = []
    for k in range(count):
        frame = np.full((size, size, 3), 90, np.uint8)
        frame[5:155, 15 + k % 10:145 + k % 10] = head
        frames.append(frame)
    return frames


def write_clip(path, frames, fps=25, audio_path=None):
    with VideoWriter(str(path), fps, frames[0].shape[1], frames[0].shape[0], audio_path=audio_path) as writer:
        for frame in frames:
            writer.write(frame)


def tone(path, seconds):
    t = np.arange(int(seconds * AUDIO_RATE_HZ)) / AUDIO_RATE_HZ
    soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * 220 * t), AUDIO_RATE_HZ)


def ffmpeg(*args):
    """Run the bundled ffmpeg on ``args``; raise with its message if it fails."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *map(str, args)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
