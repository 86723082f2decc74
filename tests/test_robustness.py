"""Round two of inputs a hostile but realistic user hands us: trimmed and remuxed clips that are not
damaged, paths given from another folder, odd names, bad numbers on the command line, two runs writing
the same output, refused training states."""
import argparse
import glob
import importlib
import os
import runpy
import subprocess
import sys
import time
import warnings

import cv2
import numpy as np
import pytest
import torch

from face_detection import CascadeDetector
from face_detection.tracking import TrackingOptions
from dubbing import SynthesisOptions, dub
from tests.conftest import ROOT, run_module
from tests.media import ffmpeg, head_frames, tone, write_clip
from training import checkpoints
from utils.video import VideoReader, check_complete, probe_video

SCRIPTS = ["train", "train_expert", "train_syncnet", "inf_test", "inf_demo", "preparation.audio_extract", "preparation.bbx_extract", "preparation.grid",
           "preparation.make_filelist", "preparation.make_synthetic", "evaluation.avhubert_wer",
           "evaluation.eval_all", "evaluation.grid_dub", "evaluation.grid_report", "evaluation.leakage", "evaluation.mouth_sync", "evaluation.report", "evaluation.sync_eval",
           "evaluation.teacher_force_wer", "evaluation.visual_quality"]
BENCHES = ["bench.avhubert", "bench.detector_counts", "bench.dub", "bench.eval", "bench.grid_dubs", "bench.grid_speed", "bench.jobs", "bench.paste",
           "bench.real_measures", "bench.small_faces", "bench.speech_mouth_probe", "bench.train_step"]     # run as modules (python -m)


def container_frame_count(path):
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return count


@pytest.fixture(scope="module")
def remuxes(tmp_path_factory):
    """A good 3 s clip with speech, its stream-copy trim (an mp4 edit list: the container counts the frames
    before the cut's key frame too) and remuxes to .mkv and .mov (stream copy) and .webm (VP9/Opus)."""
    folder = tmp_path_factory.mktemp("remux")
    tone(folder / "speech.wav", 3.0)
    write_clip(folder / "good.mp4", head_frames(75), audio_path=folder / "speech.wav")
    ffmpeg("-ss", "1.3", "-i", folder / "good.mp4", "-t", "1.5", "-c", "copy", folder / "trim.mp4")
    ffmpeg("-i", folder / "good.mp4", "-c", "copy", folder / "remux.mkv")
    ffmpeg("-i", folder / "good.mp4", "-c", "copy", folder / "remux.mov")
    ffmpeg("-i", folder / "good.mp4", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-c:a", "libopus",
           folder / "remux.webm")
    return {kind: folder / name for kind, name in
            (("trim", "trim.mp4"), ("mkv", "remux.mkv"), ("mov", "remux.mov"), ("webm", "remux.webm"))}


def test_trims_and_remuxes_of_a_good_clip_are_whole(remuxes):
    decoded = {kind: sum(1 for _ in VideoReader(str(path))) for kind, path in remuxes.items()}   # no error
    assert decoded["mkv"] == decoded["mov"] == decoded["webm"] == 75
    assert 36 <= decoded["trim"] <= 39                                # 1.5 s of the clip
    assert container_frame_count(remuxes["trim"]) > decoded["trim"] + 2      # the count that misled us
    assert container_frame_count(remuxes["mkv"]) != 75
    for path in remuxes.values():
        check_complete(str(path))
        assert abs(probe_video(str(path)).duration_s * 25 - decoded[[k for k, p in remuxes.items() if p == path][0]]) <= 3


def test_trims_and_remuxes_preprocess_and_dub_without_a_warning(remuxes, tmp_path, talklip_checkpoint):
    # The corpus layout names every clip .mp4; the container is read from the content.
    os.makedirs(tmp_path / "main" / "spk")
    for kind, path in remuxes.items():
        (tmp_path / "main" / "spk" / f"{kind}.mp4").write_bytes(path.read_bytes())
    (tmp_path / "list.txt").write_text("".join(f"spk/{kind}\n" for kind in remuxes))
    script = subprocess.run(["bash", os.path.join(ROOT, "preprocess.sh"), "--filelist", "list.txt", "--video_root",
                             "main", "--audio_root", "audio", "--bbx_root", "bbx", "--nshard", "1"],
                            cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable),
                            timeout=300)
    assert script.returncode == 0, script.stderr
    assert "failed:" not in script.stderr and "[mov," not in script.stderr
    for kind, path in remuxes.items():
        boxes = np.load(tmp_path / "bbx" / "spk" / f"{kind}.npy")
        assert len(boxes) == sum(1 for _ in VideoReader(str(path)))
        assert (tmp_path / "audio" / "spk" / f"{kind}.wav").is_file()
    ckpt, model = talklip_checkpoint
    tone(tmp_path / "new.wav", 4.0)                                   # longer than every clip: all frames read
    for kind, path in remuxes.items():
        info = dub(model, str(path), str(tmp_path / "new.wav"), str(tmp_path / f"dub_{kind}.mp4"), CascadeDetector(),
                   SynthesisOptions(progress=False), TrackingOptions(), strict=True)
        assert not info.damaged and info.frames == 100
    demo = run_module("inf_demo", "--video_path", remuxes["trim"], "--wav_path", tmp_path / "new.wav", "--ckpt_path",
                      ckpt, "--device", "cpu", "--no_progress", "--save_path", tmp_path / "demo")
    assert demo.returncode == 0 and "warning" not in demo.stderr, demo.stderr


def test_paths_are_read_from_the_callers_folder(tmp_path):
    """preprocess.sh run from another folder with relative paths writes there, and says where, absolutely;
    make_filelist takes names with quotes, '#' and non-ASCII letters, and refuses white space up front."""
    clips = tmp_path / "my_videos"
    os.makedirs(clips / "trip")
    tone(tmp_path / "speech.wav", 1.0)
    write_clip(clips / "trip" / "it's #1 été.mp4".replace(" ", "_"), head_frames(25), audio_path=tmp_path / "speech.wav")
    listed = run_module("preparation.make_filelist", "--video_root", "my_videos", "--out", "lists/filelist.txt",
                        cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert (tmp_path / "lists" / "filelist.txt").read_text(encoding="utf-8") == "trip/it's_#1_été\n"
    script = subprocess.run(["bash", os.path.join(ROOT, "preprocess.sh"), "--filelist", "lists/filelist.txt",
                             "--video_root", "my_videos", "--audio_root", "my_data/audio", "--bbx_root", "./my_data/bbx",
                             "--nshard", "1"], cwd=tmp_path, capture_output=True, text=True,
                            env=dict(os.environ, PYTHON=sys.executable), timeout=300)
    assert script.returncode == 0, script.stderr
    assert f"done: audio in {tmp_path}/my_data/audio, face boxes in {tmp_path}/my_data/bbx" in script.stdout
    assert len(np.load(tmp_path / "my_data" / "bbx" / "trip" / "it's_#1_été.npy")) == 25
    assert (tmp_path / "my_data" / "audio" / "trip" / "it's_#1_été.wav").is_file()
    assert not os.path.exists(os.path.join(ROOT, "my_data"))
    missing = subprocess.run(["bash", os.path.join(ROOT, "preprocess.sh"), "--data_root", "nowhere"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and f"data folder nowhere does not exist (from {tmp_path})" in missing.stderr

    write_clip(clips / "trip" / "day two.mp4", head_frames(3))
    spaced = run_module("preparation.make_filelist", "--video_root", "my_videos", "--out", "all.txt", cwd=tmp_path)
    lines = spaced.stderr.strip().splitlines()
    assert spaced.returncode == 2 and len(lines) == 1 and "day two.mp4 has white space in its path" in lines[0]
    assert not (tmp_path / "all.txt").exists()


def _parsers():
    """(name, ArgumentParser) of every script, caught as it is about to parse (nothing runs)."""
    class Caught(Exception):
        pass

    def catch(parser, *args, **kwargs):
        raise Caught(parser)

    found = []
    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        for name in SCRIPTS + BENCHES:
            try:
                if name.startswith("bench."):
                    with warnings.catch_warnings():    # another test imported it: runpy says so, harmlessly here
                        warnings.filterwarnings("ignore", "'bench.* found in sys.modules", RuntimeWarning)
                        runpy.run_module(name, run_name="__main__")
                else:
                    importlib.import_module(name).parse_args([])
            except Caught as caught:
                found.append((name, caught.args[0]))
    finally:
        argparse.ArgumentParser.parse_args = original
    return found


def test_every_numeric_flag_is_checked_where_it_is_parsed():
    parsers = _parsers()
    assert len(parsers) == len(SCRIPTS) + len(BENCHES)
    unchecked = [f"{name} {action.option_strings[0]}" for name, parser in parsers for action in parser._actions
                 if action.option_strings and (action.type in (int, float) or (
                     action.type is None and isinstance(action.default, (int, float))
                     and not isinstance(action.default, bool) and action.nargs != 0))]
    assert not unchecked, f"numeric flags parsed without a check: {unchecked}"


@pytest.mark.parametrize("module, flag, value, says", [
    ("inf_demo", "--audio_window", "300", "300 is below 301"),
    ("inf_demo", "--max_gap", "-1", "-1 is negative"),
    ("train", "--lr", "nan", "'nan' is not a finite number"),
    ("preparation.make_filelist", "--valid_fraction", "1.5", "1.5 is not between 0 and 1"),
])
def test_a_bad_number_is_one_usage_line(module, flag, value, says):
    proc = run_module(module, flag, value)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and f"argument {flag}: {says}" in last and "Traceback" not in proc.stderr


WRITER = """
import os, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from utils.video import VideoWriter
out, me, frames, wait_for, touch_mid, touch_end = sys.argv[1:]
with VideoWriter(out, 25, 64, 48) as writer:
    for k in range(int(frames)):
        writer.write(np.full((48, 64, 3), 40 * int(me == "a"), np.uint8))
        if k == int(frames) - 10:             # past the encoder's look-ahead: ffmpeg has made its file
            open(touch_mid, "w").close()
            deadline = time.time() + 60
            while wait_for != "-" and not os.path.exists(wait_for) and time.time() < deadline:
                time.sleep(0.05)
open(touch_end, "w").close()
"""


def test_two_runs_writing_one_output_both_finish_and_the_last_wins(tmp_path):
    """Run a opens the output and stops mid-way; run b writes the same output start to finish (its
    clean-up of stale temporaries must leave a's alone); then a goes on and finishes: a's file, complete."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=ROOT))
    out, a_mid, go = tmp_path / "dub.mp4", tmp_path / "a_mid", tmp_path / "go"
    first = subprocess.Popen([sys.executable, script, out, "a", "60", go, a_mid, tmp_path / "a_done"],
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (a_mid.exists() and glob.glob(str(tmp_path / ".dub.tmp-*.mp4"))) and time.time() < deadline:
        time.sleep(0.05)
    assert len(glob.glob(str(tmp_path / ".dub.tmp-*.mp4"))) == 1       # a's temporary, in progress
    second = subprocess.run([sys.executable, script, out, "b", "12", "-", tmp_path / "b_mid", tmp_path / "b_done"],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert sum(1 for _ in VideoReader(str(out))) == 12               # b's, complete
    go.touch()
    assert first.wait(timeout=60) == 0, first.stderr.read()
    frames = list(VideoReader(str(out)))
    assert len(frames) == 60 and frames[0].mean() > 30               # a's, complete: the last to finish
    assert not glob.glob(str(tmp_path / ".dub.tmp-*"))


def test_a_dead_writers_temporary_is_removed_a_live_ones_kept(tmp_path):
    from utils.fileio import TMP_MARK, _host_tag, atomic_output
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out{TMP_MARK}{_host_tag()}-{dead.pid}-0123abcd.txt"
    live = tmp_path / f".out{TMP_MARK}{_host_tag()}-{os.getppid()}-4567abcd.txt"    # pytest's parent: alive
    old_style = tmp_path / f".out{TMP_MARK}89abcdef.txt"                            # before writers were named
    for path in (stale, live, old_style):
        path.write_text("partial")
    with atomic_output(str(tmp_path / "out.txt")) as tmp, open(tmp, "w") as handle:
        handle.write("whole")
    assert (tmp_path / "out.txt").read_text() == "whole"
    assert live.exists() and not stale.exists() and not old_style.exists()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _state(step):
    return {"gen": {"w": torch.zeros(2)}, "disc": {}, "opt_g": {}, "opt_d": {}, "curriculum": {}, "step": step,
            "config": {}, "rng": {}}


def test_refused_states_are_moved_aside_and_never_crowd_out_good_ones(tmp_path):
    for step in (5, 10):
        torch.save(_state(step), tmp_path / checkpoints.STATE_FILE.format(step))
    raw = (tmp_path / checkpoints.STATE_FILE.format(10)).read_bytes()
    (tmp_path / checkpoints.STATE_FILE.format(15)).write_bytes(raw[:len(raw) // 2])          # a killed copy
    torch.save({**_state(20), "extra": _RunsCode()}, tmp_path / checkpoints.STATE_FILE.format(20))   # runs code
    warnings = []
    path, state = checkpoints.newest_state(str(tmp_path), warn=warnings.append)
    assert state["step"] == 10 and path.endswith(checkpoints.STATE_FILE.format(10))
    assert len(warnings) == 2 and all("moved aside" in w for w in warnings)
    assert sorted(os.listdir(tmp_path)) == sorted([checkpoints.STATE_FILE.format(5), checkpoints.STATE_FILE.format(10),
                                                   checkpoints.STATE_FILE.format(15) + ".refused",
                                                   checkpoints.STATE_FILE.format(20) + ".refused"])
    checkpoints.write_step(str(tmp_path), 25, {"state_dict": {}}, {"state_dict": {}}, _state(25), keep_last=3)
    kept = [step for step, _ in checkpoints.state_files(str(tmp_path))]
    assert kept == [5, 10, 25]                                       # the good ones, none deleted for a refused one
    assert not (tmp_path / "pwned").exists() and not os.path.exists(os.path.join(ROOT, "pwned"))


def test_libav_lines_stay_out_of_a_damaged_files_one_line_error(tmp_path):
    """A file with scrambled bytes mid-stream: decoding it prints nothing of libav's own ('[h264 @ 0x...]
    Invalid NAL unit size'), only our error. OpenCV left at its defaults (as before) prints them for the
    same file: the test can tell."""
    write_clip(tmp_path / "good.mp4", head_frames(75))
    data = bytearray((tmp_path / "good.mp4").read_bytes())
    for i in range(len(data) * 2 // 5, len(data) * 4 // 5, 7):
        data[i] = (data[i] * 31 + 7) % 256
    (tmp_path / "bad.mp4").write_bytes(bytes(data))
    code = ("import sys; sys.path.insert(0, {root!r})\n"
            "from utils.errors import MediaError\nfrom utils.video import VideoReader\n"
            "try:\n    list(VideoReader({path!r}))\nexcept MediaError as err:\n    print('error:', err, file=sys.stderr)\n")
    code = code.format(root=ROOT, path=str(tmp_path / "bad.mp4"))
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"})
    assert quiet.stderr.strip().splitlines() == [line for line in quiet.stderr.strip().splitlines()
                                                if line.startswith("error:")]
    assert len(quiet.stderr.strip().splitlines()) == 1 and str(tmp_path / "bad.mp4") in quiet.stderr
    plain = f"import cv2\ncapture = cv2.VideoCapture({str(tmp_path / 'bad.mp4')!r})\nwhile capture.read()[0]:\n    pass\n"
    loud = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"})
    assert "[h264 @" in loud.stderr


def test_a_streamed_webm_without_a_duration_dubs_and_passes_the_page_s_check(tmp_path, talklip_checkpoint):
    """A webm written to a pipe (a browser's MediaRecorder does the same) declares no duration, and OpenCV
    reports -2.3e17 frames for it: it was refused as 'no video stream with frames'. It decodes fine: its
    packets are counted instead, and it dubs and passes the page's limits."""
    from app import check_limits
    from utils.ffmpeg import ffmpeg_exe
    tone(tmp_path / "speech.wav", 2.0)
    write_clip(tmp_path / "face.mp4", head_frames(40), audio_path=tmp_path / "speech.wav")
    with open(tmp_path / "streamed.webm", "wb") as out:
        subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(tmp_path / "face.mp4"), "-c:v", "libvpx-vp9",
                        "-deadline", "realtime", "-c:a", "libopus", "-f", "webm", "pipe:1"], stdout=out, check=True)
    capture = cv2.VideoCapture(str(tmp_path / "streamed.webm"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) < 0          # what OpenCV makes of it
    capture.release()
    info = probe_video(str(tmp_path / "streamed.webm"))
    assert info.num_frames == 40 and info.duration_s is None
    check_limits(str(tmp_path / "streamed.webm"), str(tmp_path / "speech.wav"), 200, 300)
    proc = run_module("inf_demo", "--video_path", tmp_path / "streamed.webm", "--wav_path", tmp_path / "speech.wav",
                      "--ckpt_path", talklip_checkpoint[0], "--save_path", tmp_path / "dub", "--device", "cpu",
                      "--no_progress")
    assert proc.returncode == 0, proc.stderr
    assert sum(1 for _ in VideoReader(str(tmp_path / "dub.mp4"))) == 50
    from utils.video import FrameSeeker                # going back without an index to seek by: decoded again
    frames = np.stack(list(VideoReader(str(tmp_path / "streamed.webm"))))
    with FrameSeeker(str(tmp_path / "streamed.webm")) as seeker:
        seeker.get(np.arange(0, 30))
        assert np.array_equal(seeker.get(np.arange(25, 35)), frames[25:35])


def test_an_anamorphic_clip_keeps_its_aspect_and_its_faces_are_found_as_displayed(tmp_path, talklip_checkpoint):
    """384x512 stored with SAR 4:3 (DV, HDV, broadcast MPEG-2) shows 512x512. The dub came out 384x512 untagged,
    faces 25% narrower on playback; now the dub carries SAR 4:3, and faces are found on the picture as displayed
    (the boxes, in stored pixels, match the square-pixel clip's squeezed by 3/4)."""
    import skimage.data
    from face_detection import CascadeDetector
    from face_detection.tracking import boxes_for_video
    from utils.video import VideoWriter, sample_aspect
    photo = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    shown = [np.roll(photo, 3 * k, axis=1) for k in range(12)]                 # 512x512, the face drifting
    tone(tmp_path / "speech.wav", 0.8)
    for name, size, sar in (("square", (512, 512), (1, 1)), ("anamorphic", (384, 512), (4, 3))):
        with VideoWriter(str(tmp_path / f"{name}.mp4"), 25, *size, sar=sar) as writer:
            for frame in shown:
                writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    assert sample_aspect(str(tmp_path / "anamorphic.mp4")) == (4, 3)
    opts = TrackingOptions(detect_every=1, detect_max_side=0, max_gap_s=None)
    square = boxes_for_video(str(tmp_path / "square.mp4"), CascadeDetector(), opts).astype(float)
    squeezed = boxes_for_video(str(tmp_path / "anamorphic.mp4"), CascadeDetector(), opts).astype(float)
    assert np.abs(squeezed[:, [0, 2]] - square[:, [0, 2]] * 0.75).max() <= 4
    assert np.abs(squeezed[:, [1, 3]] - square[:, [1, 3]]).max() <= 4
    proc = run_module("inf_demo", "--video_path", tmp_path / "anamorphic.mp4", "--wav_path", tmp_path / "speech.wav",
                      "--ckpt_path", talklip_checkpoint[0], "--save_path", tmp_path / "dub", "--device", "cpu",
                      "--no_progress")
    assert proc.returncode == 0, proc.stderr
    info = probe_video(str(tmp_path / "dub.mp4"))
    assert (info.width, info.height) == (384, 512) and info.sar == (4, 3)
