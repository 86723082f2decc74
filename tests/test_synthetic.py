"""The synthetic corpus: LRS2 layout, determinism, and a mouth that moves with the speech."""
import os

import numpy as np
import pytest

from preparation.make_synthetic import make_corpus
from utils.audio import AUDIO_RATE_HZ, load_audio
from utils.errors import TalkLipError
from utils.video import VideoReader


def test_layout_matches_lrs2(corpus):
    data, splits = corpus
    names = splits["all"]
    assert len(names) == 6
    for split in ("train", "valid", "test"):
        listed = open(os.path.join(data, f"{split}.txt")).read().split()
        assert listed == splits[split] and listed
    assert sorted(splits["train"] + splits["valid"] + splits["test"]) == names
    for name in names:
        speaker, clip = name.split("/")
        assert speaker.isdigit() and len(clip) == 5
        assert os.path.isfile(os.path.join(data, "main", f"{name}.mp4"))
        first = open(os.path.join(data, "main", f"{name}.txt")).readline()
        assert first.startswith("Text:  ") and first[7:].strip().replace(" ", "").isalpha()


def frame_mouth_darkness(frame, center):
    x, y = (int(round(v)) for v in center)
    region = frame[y - 8: y + 9, x - 12: x + 13].astype(float).mean(axis=2)
    return (region < 70).mean()


def test_mouth_opens_and_closes_with_the_speech(speech_corpus):
    data, splits = speech_corpus
    for name in splits["all"][:3]:
        truth = np.load(os.path.join(data, "gt", f"{name}.npz"))
        opening, centers = truth["mouth_opening"], truth["mouth_center"]
        frames = list(VideoReader(os.path.join(data, "main", f"{name}.mp4")))
        assert len(frames) == len(opening) == len(centers)
        dark = np.array([frame_mouth_darkness(f, c) for f, c in zip(frames, centers)])
        assert np.corrcoef(dark, opening)[0, 1] > 0.8          # the picture follows the ground truth
        audio = load_audio(os.path.join(data, "main", f"{name}.mp4"))
        hop = AUDIO_RATE_HZ // 25
        loudness = np.array([np.sqrt(np.mean(audio[i * hop:(i + 1) * hop] ** 2)) for i in range(len(frames))])
        assert np.corrcoef(loudness, opening)[0, 1] > 0.7      # ...and the ground truth the sound
        assert opening.min() == 0.0 and opening.max() == pytest.approx(1.0)


def test_same_seed_same_corpus(tmp_path):
    first = make_corpus(str(tmp_path / "a"), num_clips=3, seed=3, min_words=1, max_words=2)
    second = make_corpus(str(tmp_path / "b"), num_clips=3, seed=3, min_words=1, max_words=2)
    other = make_corpus(str(tmp_path / "c"), num_clips=3, seed=4, min_words=1, max_words=2)
    assert first == second and first != other
    for name in first["all"]:
        text = lambda root: open(tmp_path / root / "main" / f"{name}.txt").read()
        assert text("a") == text("b")
        gt_a, gt_b = np.load(tmp_path / "a" / "gt" / f"{name}.npz"), np.load(tmp_path / "b" / "gt" / f"{name}.npz")
        for key in ("mouth_opening", "face_box", "mouth_center"):
            np.testing.assert_array_equal(gt_a[key], gt_b[key])
        np.testing.assert_array_equal(load_audio(str(tmp_path / "a" / "main" / f"{name}.mp4")),
                                      load_audio(str(tmp_path / "b" / "main" / f"{name}.mp4")))


def test_builtin_synthesiser_without_espeak(tmp_path):
    splits = make_corpus(str(tmp_path), num_clips=3, seed=1, min_words=1, max_words=2, use_espeak=False)
    truth = np.load(tmp_path / "gt" / f"{splits['all'][0]}.npz")
    assert truth["mouth_opening"].max() == pytest.approx(1.0) and (truth["mouth_opening"] == 0).any()


def test_too_few_clips_is_refused(tmp_path):
    with pytest.raises(TalkLipError, match="--num_clips 2"):
        make_corpus(str(tmp_path), num_clips=2)
