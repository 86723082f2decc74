"""Video round trips through the bundled ffmpeg, streaming reads, and clean failures."""
import os

import numpy as np
import pytest

from utils.audio import AUDIO_RATE_HZ, load_audio, save_wav
from utils.errors import MediaError
from utils.video import VideoReader, VideoWriter, extract_audio, probe_video


def gradient_frames(n, height, width):
    y, x = np.mgrid[0:height, 0:width]
    for i in range(n):
        frame = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, (i * 7) % 256)], -1)
        yield frame.astype(np.uint8)


@pytest.mark.parametrize("fps,num_frames,size", [(25, 40, (96, 128)), (30, 45, (120, 160))])
def test_round_trip_keeps_frames_fps_and_audio(tmp_path, fps, num_frames, size):
    height, width = size
    seconds = num_frames / fps
    wav = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * AUDIO_RATE_HZ)) / AUDIO_RATE_HZ)
    save_wav(str(tmp_path / "a.wav"), wav)
    frames = list(gradient_frames(num_frames, height, width))
    path = str(tmp_path / "v.mp4")
    with VideoWriter(path, fps, width, height, audio_path=str(tmp_path / "a.wav")) as writer:
        for frame in frames:
            writer.write(frame)

    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (num_frames, width, height)
    assert info.fps == pytest.approx(fps, abs=1e-3)
    decoded = list(VideoReader(path))
    assert len(decoded) == num_frames
    error = np.abs(np.stack(decoded).astype(float) - np.stack(frames)).mean()
    assert error < 3.0
    audio = load_audio(path)
    assert abs(len(audio) / AUDIO_RATE_HZ - seconds) <= 1.0 / fps
    extract_audio(path, str(tmp_path / "x.wav"))
    assert abs(len(load_audio(str(tmp_path / "x.wav"))) - len(audio)) <= 1


def test_reader_streams_in_batches(tmp_path):
    path = str(tmp_path / "v.mp4")
    with VideoWriter(path, 25, 64, 48) as writer:
        writer.write_batch(np.stack(list(gradient_frames(23, 48, 64))))
    reader = VideoReader(path)
    assert reader.num_frames == 23 and reader.fps == 25   # known before decoding
    sizes = [batch.shape for batch in reader.batches(10)]
    assert sizes == [(10, 48, 64, 3), (10, 48, 64, 3), (3, 48, 64, 3)]


def test_odd_frame_sizes_are_kept(tmp_path):
    path = str(tmp_path / "odd.mp4")
    frames = np.stack(list(gradient_frames(5, 97, 161)))
    with VideoWriter(path, 25, 161, 97) as writer:
        writer.write_batch(frames)
    info = probe_video(path)
    assert (info.width, info.height) == (161, 97)
    decoded = np.stack(list(VideoReader(path))).astype(int)
    assert np.abs(decoded - frames).mean() < 2


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(str(path), 25, 32, 32) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="uint8"):
        with VideoWriter(str(path), 25, 32, 32) as writer:
            writer.write(np.zeros((32, 32, 3), np.float32))
    assert os.listdir(tmp_path) == []


def test_corrupt_and_missing_videos_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    with pytest.raises(MediaError, match="corrupt.mp4"):
        VideoReader(str(corrupt))
    with pytest.raises(MediaError, match="absent.mp4"):
        VideoReader(str(tmp_path / "absent.mp4"))
    with pytest.raises(MediaError, match="corrupt.mp4"):
        extract_audio(str(corrupt), str(tmp_path / "x.wav"))
    assert not (tmp_path / "x.wav").exists()
