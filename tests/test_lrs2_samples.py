"""The five real LRS2 clips of ../shared/data/lrs2_samples in their own layout (main/demo/<id>.mp4 and .txt):
preprocessing, the measures and a dub go through them (skipped without the folder)."""
import os
import shutil

import numpy as np
import pytest

from tests.conftest import ROOT, run_module

LRS2 = os.path.join(ROOT, "..", "shared", "data", "lrs2_samples", "main")
pytestmark = pytest.mark.skipif(not os.path.isdir(LRS2), reason="../shared/data/lrs2_samples is not here")
CLIPS = ["demo/00001", "demo/00004", "demo/00008", "demo/00016", "demo/00022"]


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    out = tmp_path_factory.mktemp("lrs2")
    (out / "list.txt").write_text("".join(f"{c}\n" for c in CLIPS))
    proc = run_module("preparation.make_filelist", "--video_root", LRS2, "--out", out / "made.txt")
    assert proc.returncode == 0 and open(out / "made.txt").read().split() == CLIPS, proc.stderr
    import subprocess
    import sys
    script = subprocess.run(["bash", os.path.join(ROOT, "preprocess.sh"), "--filelist", str(out / "list.txt"),
                             "--video_root", LRS2, "--audio_root", str(out / "audio"), "--bbx_root", str(out / "bbx"),
                             "--nshard", "1"], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHON=sys.executable))
    assert script.returncode == 0, script.stderr
    return out


def test_the_lrs2_clips_preprocess_in_their_own_layout(preprocessed):
    from utils.video import VideoReader
    for clip in CLIPS:
        with VideoReader(f"{LRS2}/{clip}.mp4") as reader:
            frames = sum(1 for _ in reader)
        boxes = np.load(preprocessed / "bbx" / f"{clip}.npy")
        widths = boxes[:, 2] - boxes[:, 0]
        assert len(boxes) == frames and np.median(widths) > 80 and np.mean(widths > 60) > 0.9, clip   # face-sized
        assert os.path.getsize(preprocessed / "audio" / f"{clip}.wav") > 16000


def test_the_measures_read_the_lrs2_clips(preprocessed):
    """Mouth sync (placed by the face boxes) reads a clip against itself as 1 and against another clip near 0;
    SyncNet (GRID's: another speaker, another camera) and the transcripts' reader run on them."""
    from evaluation import mouth_sync
    from evaluation.common import ClipRun
    from evaluation.sync_eval import clip_sync, load_syncnet
    opts = mouth_sync.MouthSyncOptions(video_root=LRS2, gt_root=None, real_root=LRS2,
                                       bbx_root=str(preprocessed / "bbx"))
    own = mouth_sync.evaluate(opts, ClipRun(progress=False, cache_dir=str(preprocessed / "cache")), CLIPS)
    assert own["r_mean"] > 0.999
    syncnet = load_syncnet(os.path.join(ROOT, "weights", "grid_s1_syncnet.pt"))
    scores = clip_sync(f"{LRS2}/{CLIPS[0]}.mp4", syncnet, 15, 20)
    assert np.isfinite(scores["lse_c"]) and -15 <= scores["offset"] <= 15


def test_an_lrs2_clip_is_dubbed_at_its_own_size_and_rate(preprocessed, talklip_checkpoint, tmp_path):
    """A face-centred LRS2 clip dubs with OpenCV's cascade on every frame (00008 left 32 of 74 frames undubbed
    when the cascade could not find a face that fills the frame); where frames do pass through (00004's first
    second shows the face turned away), the dub says how many and why."""
    from utils.video import probe_video
    proc = run_module("inf_demo", "--video_path", f"{LRS2}/{CLIPS[2]}.mp4", "--wav_path", f"{LRS2}/{CLIPS[0]}.mp4",
                      "--ckpt_path", talklip_checkpoint[0], "--save_path", tmp_path / "dub", "--device", "cpu",
                      "--no_progress")
    assert proc.returncode == 0, proc.stderr
    info = probe_video(str(tmp_path / "dub.mp4"))
    assert (info.width, info.height, round(info.fps)) == (160, 160, 25)
    assert "passed through untouched" not in proc.stderr, proc.stderr.splitlines()[-1]
    turned = run_module("inf_demo", "--video_path", f"{LRS2}/{CLIPS[1]}.mp4", "--wav_path", f"{LRS2}/{CLIPS[2]}.mp4",
                        "--ckpt_path", talklip_checkpoint[0], "--save_path", tmp_path / "turned", "--device", "cpu",
                        "--no_progress")
    last = turned.stderr.strip().splitlines()[-1]
    assert turned.returncode == 0 and "frames without the face passed through untouched: " in last
    assert "looks found no face" in last and "outlasted --max_gap 0.2 s" in last and "give --s3fd_path" in last
