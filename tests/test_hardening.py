"""Inputs a demanding user hands us: damaged and cut videos, outputs pointing at inputs or at
folders, one-frame videos, audio files without audio, interrupted runs."""
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from face_detection import CascadeDetector
from face_detection.tracking import TrackingOptions, boxes_for_video
from dubbing import SynthesisOptions, synthesize_test_clip
from tests.conftest import ROOT, run_module
from tests.media import head_frames, tone, write_clip
from utils.errors import MediaError
from utils.video import VideoReader, probe_video


@pytest.fixture()
def damaged(tmp_path):
    """An 81-frame clip (with speech) whose end was lost in a copy: the container still declares 3.24 s."""
    whole = tmp_path / "whole.mp4"
    tone(tmp_path / "speech.wav", 81 / 25)
    write_clip(whole, head_frames(81), audio_path=tmp_path / "speech.wav")
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) * 9 // 10])
    reader = VideoReader(str(cut), allow_truncated=True)
    decoded = sum(1 for _ in reader)
    assert probe_video(str(cut)).duration_s == pytest.approx(81 / 25) and decoded < 79 and reader.truncated
    return cut, decoded


def test_a_damaged_video_is_reported_everywhere_as_one_line(tmp_path, damaged, talklip_checkpoint):
    cut, decoded = damaged
    message = f"stops after {decoded} frames"
    with pytest.raises(MediaError, match=message):
        boxes_for_video(str(cut), CascadeDetector(), TrackingOptions())
    with pytest.raises(MediaError, match=message):
        list(VideoReader(str(cut)))                               # what every metric and the trainer read through
    _, model = talklip_checkpoint
    tone(tmp_path / "a.wav", 81 / 25)
    boxes = np.tile([15, 5, 145, 155], (81, 1))             # what a full preprocessing would have written
    with pytest.raises(MediaError, match=message):
        synthesize_test_clip(model, str(cut), str(tmp_path / "a.wav"), boxes, str(tmp_path / "synt.mp4"),
                             SynthesisOptions(progress=False))
    assert not os.path.exists(tmp_path / "synt.mp4")
    path, _ = talklip_checkpoint
    args = ["--video_path", cut, "--wav_path", tmp_path / "a.wav", "--ckpt_path", path, "--device", "cpu",
            "--no_progress"]
    warned = run_module("inf_demo", *args, "--save_path", tmp_path / "out")
    assert warned.returncode == 0 and f"stop after {decoded} of its 3.24 s video stream" in warned.stderr
    strict = run_module("inf_demo", *args, "--save_path", tmp_path / "strict", "--strict")
    assert strict.returncode == 2 and message in strict.stderr
    assert not os.path.exists(tmp_path / "strict.mp4")
    for proc in (warned, strict):                                 # libav's own lines stay out of it
        assert "[h264 @" not in proc.stderr and "[mov," not in proc.stderr and "Traceback" not in proc.stderr


def test_preprocessing_lists_a_damaged_clip_as_failed(tmp_path, damaged):
    cut, decoded = damaged
    os.makedirs(tmp_path / "main" / "spk")
    os.replace(cut, tmp_path / "main" / "spk" / "cut.mp4")
    (tmp_path / "list.txt").write_text("spk/cut\n")
    common = ["--filelist", tmp_path / "list.txt", "--video_root", tmp_path / "main", "--device", "cpu"]
    proc = run_module("preparation.bbx_extract", *common, "--bbx_root", tmp_path / "bbx")
    assert proc.returncode == 3
    assert not os.path.exists(tmp_path / "bbx" / "spk" / "cut.npy")
    assert f"stops after {decoded} frames" in (tmp_path / "bbx" / "failures_bbx_extract_1of1.txt").read_text()
    audio = run_module("preparation.audio_extract", *common[:-2], "--audio_root", tmp_path / "audio")
    assert audio.returncode == 3 and not os.path.exists(tmp_path / "audio" / "spk" / "cut.wav")
    assert "video stream (damaged or cut short)" in (tmp_path / "audio" / "failures_audio_extract_1of1.txt").read_text()
    script = subprocess.run(["bash", "preprocess.sh", "--filelist", str(tmp_path / "list.txt"), "--video_root",
                             str(tmp_path / "main"), "--audio_root", str(tmp_path / "audio"), "--bbx_root",
                             str(tmp_path / "bbx2"), "--nshard", "1"], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PYTHON=sys.executable), timeout=300)
    assert script.returncode == 3, script.stderr                 # as the README says: clips failed
    assert "[h264 @" not in script.stderr and "[mov," not in script.stderr


def test_output_paths_that_would_destroy_an_input_or_hide_the_output(tmp_path, talklip_checkpoint):
    path, _ = talklip_checkpoint
    video = tmp_path / "clip.mp4"
    write_clip(video, head_frames(10))
    tone(tmp_path / "a.wav", 0.4)
    before = video.read_bytes()
    common = ["--video_path", video, "--wav_path", tmp_path / "a.wav", "--ckpt_path", path, "--device", "cpu",
              "--no_progress"]
    same = run_module("inf_demo", *common, "--save_path", video)
    assert same.returncode == 2 and "would destroy it" in same.stderr.strip().splitlines()[-1]
    assert video.read_bytes() == before
    (tmp_path / "afile").write_text("x")
    blocked = run_module("inf_demo", *common, "--save_path", tmp_path / "afile" / "out")
    last = blocked.stderr.strip().splitlines()[-1]
    assert blocked.returncode == 2 and last.startswith("error: cannot create the folder") and "Traceback" not in blocked.stderr
    folder = run_module("inf_demo", *common, "--save_path", f"{tmp_path}/dubs/")
    assert folder.returncode == 0, folder.stderr
    assert os.listdir(tmp_path / "dubs") == ["clip.mp4"]
    zero = run_module("inf_demo", *common, "--chunk_frames", "0")
    assert zero.returncode == 2 and "not positive" in zero.stderr


def test_audio_without_an_audio_stream_is_one_line(tmp_path, talklip_checkpoint):
    path, _ = talklip_checkpoint
    video = tmp_path / "silent.mp4"
    write_clip(video, head_frames(10))
    proc = run_module("inf_demo", "--video_path", video, "--wav_path", video, "--ckpt_path", path,
                      "--save_path", tmp_path / "out", "--device", "cpu", "--no_progress")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {video} has no audio stream: give a file with a speech track"


def test_a_one_frame_video_with_long_speech(tmp_path, talklip_checkpoint):
    path, _ = talklip_checkpoint
    video = tmp_path / "one.mp4"
    write_clip(video, head_frames(1))
    tone(tmp_path / "a.wav", 3.0)                           # 75 frames: more than two chunks
    proc = run_module("inf_demo", "--video_path", video, "--wav_path", tmp_path / "a.wav", "--ckpt_path", path,
                      "--save_path", tmp_path / "out", "--device", "cpu", "--no_progress")
    assert proc.returncode == 0, proc.stderr
    frames = np.stack(list(VideoReader(str(tmp_path / "out.mp4")))).astype(int)
    assert len(frames) == 75
    source = np.stack(list(VideoReader(str(video)))).astype(int)
    assert np.abs(frames[:, :, :12] - source[:, :, :12]).mean(axis=(1, 2, 3)).max() < 2   # one picture, outside the face


@pytest.mark.parametrize("stop,status,last_line", [(signal.SIGTERM, 143, "terminated"),
                                                   (signal.SIGHUP, 129, "hung up: stopped")])
def test_sigterm_leaves_no_partial_file_and_a_rerun_clears_old_ones(tmp_path, talklip_checkpoint, stop, status,
                                                                    last_line):
    """SIGTERM, and SIGHUP (the terminal closed), remove the dub's temporary output and its spill file of frames
    (the speech outlasts the video) and exit 128 + the signal."""
    path, _ = talklip_checkpoint
    video = tmp_path / "clip.mp4"
    write_clip(video, head_frames(25))
    tone(tmp_path / "a.wav", 12.0)
    out = tmp_path / "out"
    os.makedirs(out)
    (out / ".dub.tmp-deadbeef.mp4").write_bytes(b"left by a run killed with -9")
    cmd = [sys.executable, "inf_demo.py", "--video_path", str(video), "--wav_path", str(tmp_path / "a.wav"),
           "--ckpt_path", path, "--save_path", str(out / "dub"), "--device", "cpu", "--no_progress"]
    spill = tmp_path / "tmp"
    os.makedirs(spill)
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, env=dict(os.environ, TMPDIR=str(spill)))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        temps = [n for n in os.listdir(out) if ".tmp-" in n and "deadbeef" not in n]
        if temps and os.path.getsize(out / temps[0]) > 0:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    assert not os.path.exists(out / ".dub.tmp-deadbeef.mp4")      # the stale one went when writing began
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status and err.strip().splitlines()[-1] == last_line, err[-800:]
    assert os.listdir(out) == []
    assert [os.path.join(d, f) for d, _, files in os.walk(spill) for f in files] == []


def test_variable_frame_rate_keeps_its_timing(tmp_path, talklip_checkpoint):
    from utils.ffmpeg import run_ffmpeg
    frames = head_frames(50)
    for k, frame in enumerate(frames):                     # each frame shows its number
        cv2.putText(frame, str(k), (2, 158), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    write_clip(tmp_path / "cfr.mp4", frames)
    vfr = tmp_path / "vfr.mp4"                             # frames 0-24 every 40 ms, then every 80 ms
    run_ffmpeg(["-i", str(tmp_path / "cfr.mp4"), "-vf", "setpts='if(lt(N,25),N*0.04,1.0+(N-25)*0.08)/TB'",
                "-fps_mode", "vfr", "-c:v", "libx264", "-crf", "10", str(vfr)], source="test")
    reader = VideoReader(str(vfr))
    fps = reader.fps
    resampled = list(reader.resampled())
    times = np.arange(len(resampled)) / fps
    shown = np.asarray([frame.index for frame in resampled])
    def true_time(index):
        return np.where(index < 25, index * 0.04, 1.0 + (index - 25) * 0.08)

    # each output slot shows the input frame on screen at that time (the latest one that has started)
    assert (true_time(shown) <= times + 0.5 / fps + 1e-6).all()
    assert (true_time(shown + 1)[:-1] > times[:-1] + 0.5 / fps - 1e-6).all()
    path, _ = talklip_checkpoint
    tone(tmp_path / "a.wav", 2.0)
    proc = run_module("inf_demo", "--video_path", vfr, "--wav_path", tmp_path / "a.wav", "--ckpt_path", path,
                      "--save_path", tmp_path / "out", "--device", "cpu", "--no_progress")
    assert proc.returncode == 0, proc.stderr
    out = np.stack(list(VideoReader(str(tmp_path / "out.mp4")))).astype(int)
    source = np.stack(list(VideoReader(str(vfr)))).astype(int)
    k = int(round(1.48 * fps))                              # 1.48 s in: the input shows frame 31 (1.0 + 6 x 0.08)
    corner = (slice(140, 160), slice(0, 40))
    distance = [np.abs(out[k][corner] - source[j][corner]).mean() for j in range(len(source))]
    assert int(np.argmin(distance)) == 31


def test_an_s3fd_path_that_does_not_exist_is_an_error_not_a_fallback(tmp_path, talklip_checkpoint):
    """--s3fd_path naming a missing file fell back to OpenCV's cascade with only a log line: the dub (and
    preprocessing) ran with another detector than asked. Now one line and nothing written."""
    video = tmp_path / "clip.mp4"
    write_clip(video, head_frames(10))
    tone(tmp_path / "a.wav", 0.4)
    proc = run_module("inf_demo", "--video_path", video, "--wav_path", tmp_path / "a.wav", "--ckpt_path",
                      talklip_checkpoint[0], "--save_path", tmp_path / "out", "--s3fd_path", tmp_path / "s3fd.pth",
                      "--device", "cpu")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
        f"error: S3FD weights {tmp_path / 's3fd.pth'} do not exist: check --s3fd_path"), proc.stderr
    (tmp_path / "list.txt").write_text("clip\n")
    proc = run_module("preparation.bbx_extract", "--filelist", tmp_path / "list.txt", "--video_root", tmp_path,
                      "--bbx_root", tmp_path / "bbx", "--s3fd_path", tmp_path / "s3fd.pth")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
        f"error: S3FD weights {tmp_path / 's3fd.pth'} do not exist"), proc.stderr
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "bbx").exists()
