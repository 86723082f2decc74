"""The mouth-sync measure (evaluation/mouth_sync.py) and the quickstart's pictures (evaluation/report.py)."""

import os

import cv2
import numpy as np
import pytest

from evaluation import mouth_sync
from evaluation.common import ClipRun
from evaluation.mouth_sync import clip_mouth_sync, dub_mouth_sync, load_ground_truth, pearson
from evaluation.report import gan_health, mouth_sync_figure, sample_grid
from utils.timeline import ping_pong
from preparation.make_synthetic import FRAME_SIZE, draw_mouth, frame_transform, neutral_face, render_clip
from utils.errors import MediaError
from utils.video import VideoWriter

MOTION = np.array([4.0, 2.0, 0.35, 1.0, 1.0])     # head drift amplitude x/y, frequency, phase, zoom


def write_clip(path, frames):
    with VideoWriter(str(path), 25, FRAME_SIZE, FRAME_SIZE) as writer:
        for frame in frames:
            writer.write(frame)


def write_gt(path, opening, boxes, centers):
    np.savez(path, mouth_opening=np.asarray(opening, np.float32), face_box=np.asarray(boxes, np.float32),
             mouth_center=np.asarray(centers, np.float32))
    return load_ground_truth(str(path))


def test_the_corpus_scores_high(speech_corpus, tmp_path):
    data, splits = speech_corpus
    summary = mouth_sync.evaluate(mouth_sync.MouthSyncOptions(video_root=f"{data}/main", gt_root=f"{data}/gt"),
                                  ClipRun(cache_dir=str(tmp_path), progress=False), splits["all"])
    assert summary["clips"] == len(splits["all"]) and summary["r"] >= 0.95
    assert min(row["r"] for row in summary["per_clip"]) >= 0.95


def test_a_frozen_mouth_reads_as_constant(speech_corpus, tmp_path):
    """Same head motion and ground truth; the mouth drawn at one opening (its mean) in every frame. What
    the measure reads from a frozen mouth varies only with the head's sub-pixel motion: under a tenth of
    what a moving mouth gives (measured 2-4% on both synthesisers' clips). Its r against the truth is
    that noise's chance correlation (measured -0.32..0.40 over 12 clips), so r itself is not bounded."""
    data, splits = speech_corpus
    for name in splits["all"][:3]:
        opening = load_ground_truth(f"{data}/gt/{name}.npz")["mouth_opening"]
        face = neutral_face()
        moving = list(render_clip(face, opening, MOTION))
        frozen = list(render_clip(face, np.full_like(opening, opening.mean()), MOTION))
        gt = write_gt(tmp_path / "gt.npz", opening, [b for _, b, _ in moving], [c for _, _, c in moving])
        write_clip(tmp_path / "moving.mp4", [f for f, _, _ in moving])
        write_clip(tmp_path / "frozen.mp4", [f for f, _, _ in frozen])
        read_moving = clip_mouth_sync(str(tmp_path / "moving.mp4"), gt)
        read_frozen = clip_mouth_sync(str(tmp_path / "frozen.mp4"), gt)
        assert read_moving["r"] >= 0.95
        assert np.std(read_frozen["darkness"]) < 0.1 * np.std(read_moving["darkness"])
    assert pearson([1, 1, 1], [0, 1, 2]) == 0.0                       # constant darkness carries no sync


def test_against_speech_scores_a_clip_off_its_speech_by_what_the_speech_says(speech_corpus, tmp_path):
    """A corpus clip whose mouth runs 2 frames behind its speech (``--av_jitter_frames``: gt keeps the offset)
    and a video drawn in step with that speech, the same head: scored against the clip's own mouth the clip
    reads high and the in-step video lower; --against_speech turns that round, through ``evaluate`` too (its
    cache keeps the two apart)."""
    data, splits = speech_corpus
    speech = load_ground_truth(f"{data}/gt/{splits['all'][0]}.npz")["mouth_opening"]     # what the speech says
    shift = 2
    behind = np.concatenate([np.full(shift, speech[0]), speech[:-shift]])    # frame k shows speech frame k - 2
    face = neutral_face()
    clip, in_step = list(render_clip(face, behind, MOTION)), list(render_clip(face, speech, MOTION))
    (tmp_path / "videos").mkdir()
    write_clip(tmp_path / "videos" / "clip.mp4", [f for f, _, _ in clip])
    write_clip(tmp_path / "videos" / "in_step.mp4", [f for f, _, _ in in_step])
    np.savez(tmp_path / "gt.npz", mouth_opening=behind.astype(np.float32), av_offset_frames=np.int64(shift),
             face_box=np.array([b for _, b, _ in clip], np.float32), mouth_center=np.array([c for _, _, c in clip], np.float32))
    gt = load_ground_truth(str(tmp_path / "gt.npz"))
    assert gt["av_offset_frames"] == shift
    own = {name: clip_mouth_sync(str(tmp_path / "videos" / f"{name}.mp4"), gt)["r"] for name in ("clip", "in_step")}
    spoken = {name: clip_mouth_sync(str(tmp_path / "videos" / f"{name}.mp4"), gt, against_speech=True)
              for name in ("clip", "in_step")}
    assert own["clip"] >= 0.95 and spoken["in_step"]["r"] >= 0.95
    assert own["in_step"] < own["clip"] - 0.1 and spoken["clip"]["r"] < spoken["in_step"]["r"] - 0.1
    assert spoken["in_step"]["frames"] == len(speech) - shift
    (tmp_path / "gt_root").mkdir()
    np.savez(tmp_path / "gt_root" / "in_step.npz", **np.load(tmp_path / "gt.npz"))
    run = ClipRun(cache_dir=str(tmp_path / "cache"), progress=False)
    scores = [mouth_sync.evaluate(mouth_sync.MouthSyncOptions(str(tmp_path / "videos"), str(tmp_path / "gt_root"),
                                                              against_speech=flag), run, ["in_step"])["r"]
              for flag in (False, True, False)]
    assert scores[0] == scores[2] == pytest.approx(own["in_step"]) and scores[1] == pytest.approx(spoken["in_step"]["r"])


def test_a_dub_is_scored_against_the_driving_speech_through_the_ping_pong(corpus, tmp_path):
    """A dub rendered by hand: output frame k shows the face clip's head at source frame ping_pong(k) with
    the speech clip's opening at k. The measure must follow the speech, not the face clip's own."""
    data, splits = corpus
    face_truth = load_ground_truth(f"{data}/gt/{splits['all'][0]}.npz")["mouth_opening"][:30]
    speech_truth = load_ground_truth(f"{data}/gt/{splits['all'][1]}.npz")["mouth_opening"]
    face = neutral_face()
    source_frames = list(render_clip(face, face_truth, MOTION))
    face_gt = write_gt(tmp_path / "face.npz", face_truth, [b for _, b, _ in source_frames], [c for _, _, c in source_frames])
    source = ping_pong(len(speech_truth), len(face_truth))
    assert source.max() == len(face_truth) - 1 and len(speech_truth) > len(face_truth)   # the ping-pong is exercised
    frames = []
    for k, s in enumerate(source):
        image = face.copy()
        draw_mouth(image, float(speech_truth[k]))
        frames.append(cv2.warpAffine(image, frame_transform(int(s), MOTION), (FRAME_SIZE, FRAME_SIZE),
                                     flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT))
    write_clip(tmp_path / "dub.mp4", frames)
    speech_gt = write_gt(tmp_path / "speech.npz", speech_truth, np.zeros((len(speech_truth), 4)),
                         np.zeros((len(speech_truth), 2)))
    result = dub_mouth_sync(str(tmp_path / "dub.mp4"), face_gt, speech_gt)
    assert result["frames"] == len(speech_truth) and result["r"] >= 0.95
    own = pearson(result["darkness"], face_truth[source])
    assert own < result["r"] - 0.3


def test_missing_or_foreign_ground_truth_is_one_line(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        load_ground_truth(str(tmp_path / "none.npz"))
    np.savez(tmp_path / "other.npz", boxes=np.zeros((3, 4)))
    with pytest.raises(MediaError, match="not a synthetic-corpus ground truth"):
        load_ground_truth(str(tmp_path / "other.npz"))


def test_pictures_of_a_run(corpus, one_shard):
    """The corpus clip itself, 'synthesized' perfectly: the plot reads it back (r ~ 1) and the grid's
    generated column equals the ground-truth column."""
    data, splits = corpus
    name = splits["all"][0]
    video = f"{data}/main/{name}.mp4"
    figure = mouth_sync_figure(data, name, {"the clip itself": video})
    assert figure.shape[2] == 3 and figure.shape[0] >= 200
    grid = sample_grid(data, video, name, str(one_shard / "bbx"), rows=4, scale=1)
    assert grid.shape[1] == 4 * 96 and grid.shape[0] == 30 + 4 * 96
    np.testing.assert_array_equal(grid[30:, 2 * 96:3 * 96], grid[30:, 3 * 96:])
    assert (grid[30 + 60:30 + 96, 96:2 * 96] == 0).all()            # the masked lower half


def test_gan_health_flags_a_collapsed_discriminator():
    healthy = [{"disc_real": 0.6, "disc_fake": 0.7, "disc_acc": 0.6}, {"disc_real": 0.5, "disc_fake": 0.8, "disc_acc": 0.7}]
    assert gan_health(healthy, [])["collapsed"] is False and gan_health(healthy, [])["disc_acc_max"] == 0.7
    assert gan_health(healthy + [{"disc_real": 0.01, "disc_fake": 100.0, "disc_acc": 0.5}], [])["collapsed"] is True


def test_the_speech_mouth_probe_reads_a_mouth_the_speech_drives(corpus, one_shard):
    """bench.speech_mouth_probe on the synthetic corpus, whose drawn mouth opens with the speech: fitted on 4 clips it
    predicts the 2 others' mouths from their speech (r well above the control, their mouths against the prediction
    from another clip's speech)."""
    import json
    from tests.conftest import run_module
    data, splits = corpus
    names = splits["all"]
    lists = one_shard / "probe_lists"
    lists.mkdir(exist_ok=True)
    for part, members in (("train", names[:4]), ("test", names[4:])):
        (lists / f"{part}.txt").write_text("\n".join(members) + "\n")
    for sub in ("main", "gt"):
        link = lists / sub
        if not link.exists():
            link.symlink_to(os.path.join(data, sub))
    proc = run_module("bench.speech_mouth_probe", "--data_root", lists, "--audio_root", one_shard / "audio",
                      "--train_clips", 4, "--test_clips", 2, "--context", 2)
    assert proc.returncode == 0, proc.stderr
    fit = json.loads(proc.stdout.strip().splitlines()[-1])["fits"][0]
    assert fit["train_clips"] == 4
    assert fit["linear_r"] > 0.5 and fit["linear_r"] > fit["linear_r_other_speech"] + 0.3, fit


def test_the_speech_mouth_probe_names_a_missing_split_list(tmp_path):
    """A folder that is not a prepared GRID folder: one line naming the missing list and how to make it (it was the
    file-list reader's generic "pass --filelist", a flag this bench does not have)."""
    from tests.conftest import run_module
    proc = run_module("bench.speech_mouth_probe", "--data_root", tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--data_root {tmp_path} has no train.txt" in proc.stderr and "--filelist" not in proc.stderr
