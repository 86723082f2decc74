"""Preprocessing on the synthetic corpus: outputs, sharding, resume, and bad inputs."""
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from tests.conftest import ROOT, run_module
from utils.fileio import TMP_MARK
from utils.video import probe_video


def outputs_under(root):
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = path
    return found


def read_wav(path):
    data, rate = soundfile.read(path, dtype="int16")
    return data, rate


def box_iou(a, b):
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return inter / (area(a) + area(b) - inter)


def test_outputs_are_16k_wavs_and_per_frame_boxes(corpus, one_shard):
    data, splits = corpus
    for name in splits["all"]:
        info = probe_video(f"{data}/main/{name}.mp4")
        wav, rate = read_wav(one_shard / "audio" / f"{name}.wav")
        assert rate == 16000 and wav.ndim == 1
        assert abs(len(wav) / rate - info.duration_s) <= 1 / info.fps
        boxes = np.load(one_shard / "bbx" / f"{name}.npy")
        assert boxes.shape == (info.num_frames, 4) and boxes.dtype == np.int64
        truth = np.load(f"{data}/gt/{name}.npz")["face_box"]
        assert box_iou(boxes.astype(float), truth.astype(float)).mean() > 0.6


def test_preprocess_sh_with_two_shards_matches_one_shard(corpus, one_shard, tmp_path):
    data, _ = corpus
    proc = subprocess.run(["bash", "preprocess.sh", "--filelist", f"{data}/filelist.txt",
                           "--video_root", f"{data}/main", "--audio_root", str(tmp_path / "audio"),
                           "--bbx_root", str(tmp_path / "bbx"), "--nshard", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "shard 1/2" in proc.stderr and "shard 2/2" in proc.stderr
    for kind in ("audio", "bbx"):
        single, double = outputs_under(one_shard / kind), outputs_under(tmp_path / kind)
        assert sorted(single) == sorted(double) and single
        for rel in single:
            if rel.endswith(".npy"):
                np.testing.assert_array_equal(np.load(single[rel]), np.load(double[rel]))
            else:
                np.testing.assert_array_equal(read_wav(single[rel])[0], read_wav(double[rel])[0])


KILL_BEFORE_RENAME = """
import os, signal
_replace, _done = os.replace, [0]
def replace(src, dst, *args, **kwargs):
    if dst.endswith(".npy"):
        if _done[0] == int(os.environ["TALKLIP_TEST_KILL_AFTER"]):
            os.kill(os.getpid(), signal.SIGKILL)     # killed with its next output written but not renamed
        _done[0] += 1
    return _replace(src, dst, *args, **kwargs)
os.replace = replace
"""


def test_killed_run_resumes_where_it_stopped(corpus, one_shard, tmp_path):
    data, splits = corpus
    bbx_root = tmp_path / "bbx"
    hook = tmp_path / "hook"
    os.makedirs(hook)
    (hook / "sitecustomize.py").write_text(KILL_BEFORE_RENAME)
    cmd = [sys.executable, "-m", "preparation.bbx_extract", "--filelist", f"{data}/filelist.txt",
           "--video_root", f"{data}/main", "--bbx_root", str(bbx_root)]
    env = dict(os.environ, PYTHONPATH=f"{hook}{os.pathsep}{ROOT}", TALKLIP_TEST_KILL_AFTER="2")
    killed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    finished = {rel: os.path.getmtime(p) for rel, p in outputs_under(bbx_root).items() if TMP_MARK not in rel}
    assert len(finished) == 2
    assert [rel for rel in outputs_under(bbx_root) if TMP_MARK in rel]       # the third, half done

    resumed = run_module("preparation.bbx_extract", *cmd[3:])
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(finished)} already done" in resumed.stderr
    final = outputs_under(bbx_root)
    assert sorted(final) == sorted(outputs_under(one_shard / "bbx"))      # no temporaries left
    for rel, mtime in finished.items():
        assert os.path.getmtime(final[rel]) == mtime                       # not redone
    for rel, path in final.items():
        np.testing.assert_array_equal(np.load(path), np.load(one_shard / "bbx" / rel))


@pytest.mark.parametrize("module,out_flag", [("preparation.audio_extract", "--audio_root"),
                                             ("preparation.bbx_extract", "--bbx_root")])
def test_bad_files_are_logged_and_the_rest_processed(corpus, tmp_path, module, out_flag):
    data, splits = corpus
    videos = tmp_path / "videos"
    good = splits["all"][:2]
    for name in good:
        os.makedirs(videos / os.path.dirname(name), exist_ok=True)
        shutil.copy(f"{data}/main/{name}.mp4", videos / f"{name}.mp4")
    os.makedirs(videos / "bad")
    (videos / "bad" / "corrupt.mp4").write_bytes(os.urandom(5000))
    filelist = tmp_path / "list.txt"
    filelist.write_text("\n".join([good[0], "bad/corrupt", "bad/missing", good[1]]) + "\n")
    out = tmp_path / "out"

    proc = run_module(module, "--filelist", filelist, "--video_root", videos, out_flag, out)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    corrupt_lines = [ln for ln in lines if ln.startswith("failed: bad/corrupt:")]
    missing_lines = [ln for ln in lines if ln.startswith("failed: bad/missing:")]
    assert len(corrupt_lines) == 1 and str(videos / "bad" / "corrupt.mp4") in corrupt_lines[0]
    assert len(missing_lines) == 1 and "missing.mp4" in missing_lines[0]
    produced = sorted(outputs_under(out))
    assert [p for p in produced if not p.startswith("failures_")] == sorted(
        f"{n}.{'wav' if 'audio' in module else 'npy'}" for n in good)
    failures = (out / [p for p in produced if p.startswith("failures_")][0]).read_text()
    assert failures.count("\n") == 2 and "bad/corrupt\t" in failures and "bad/missing\t" in failures


@pytest.mark.parametrize("module,out_flag", [("preparation.audio_extract", "--audio_root"),
                                             ("preparation.bbx_extract", "--bbx_root")])
def test_empty_filelist_is_a_one_line_error(tmp_path, module, out_flag):
    (tmp_path / "empty.txt").write_text("\n")
    proc = run_module(module, "--filelist", tmp_path / "empty.txt", "--video_root", tmp_path,
                      out_flag, tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: file list") and "empty.txt is empty" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_preprocess_sh_checks_paths_before_starting(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    for args, expected in [(["--data_root", str(tmp_path / "nothing")], "does not exist"),
                           (["--filelist", str(tmp_path / "empty.txt"), "--video_root", str(tmp_path),
                             "--audio_root", str(tmp_path / "a"), "--bbx_root", str(tmp_path / "b")],
                            "is empty")]:
        proc = subprocess.run(["bash", "preprocess.sh", *args], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 2 and expected in proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("stop,status", [(signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_ctrl_c_stops_every_shard_of_preprocess_sh_and_a_rerun_resumes(corpus, one_shard, tmp_path, stop, status):
    """Ctrl-C reaches the whole foreground process group, but bash starts its background shards with SIGINT
    ignored: they ran on to the end after the prompt came back. Now preprocess.sh stops them all within
    seconds (exit 130), no partial file is left, and a rerun completes the outputs. A closed terminal (SIGHUP
    to the group) stops them the same way (exit 129)."""
    import time
    data, _ = corpus
    args = ["bash", os.path.join(ROOT, "preprocess.sh"), "--filelist", f"{data}/filelist.txt", "--video_root",
            f"{data}/main", "--audio_root", str(tmp_path / "audio"), "--bbx_root", str(tmp_path / "bbx"), "--nshard", "2"]
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    time.sleep(2.5)                                     # the shards are importing torch, or working
    os.killpg(proc.pid, stop)                           # what the terminal does on Ctrl-C, or when it closes
    began = time.time()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == status and time.time() - began < 15, err.decode()
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)                          # nothing of the group is left running
    assert not [rel for rel in outputs_under(tmp_path) if TMP_MARK in rel]
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    assert sorted(outputs_under(tmp_path / "bbx")) == sorted(outputs_under(one_shard / "bbx"))
