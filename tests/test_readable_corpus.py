"""The readable synthetic corpus (--grammar grid): phonemes with exact timing, a mouth drawn per viseme."""
import cv2
import numpy as np
import pytest

from preparation.make_synthetic import FPS, make_corpus
from preparation.visemes import EASE_S, LEXICON, SLOTS, VISEMES, VISEME_OF, mouth_track, speak_phonemes
from utils.audio import AUDIO_RATE_HZ, load_audio
from utils.video import VideoReader


@pytest.fixture(scope="module")
def grid_corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("grid"))
    return out, make_corpus(out, num_clips=6, seed=3, grammar="grid")


def mouth_window(frame, center, half_w=10, half_h=6):
    x, y = (int(round(v)) for v in center)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[y - half_h:y + half_h + 1, x - half_w:x + half_w + 1]


def test_the_grammar_tells_every_slot_s_words_apart_by_their_visemes():
    for slot in SLOTS:
        sequences = [tuple(VISEME_OF[p] if p in VISEME_OF else p for p in LEXICON[w]) for w in slot]
        assert len(set(sequences)) == len(slot), slot


def test_closed_lips_for_p_b_m_and_an_open_mouth_for_a(grid_corpus):
    data, splits = grid_corpus
    closed_dark, open_dark = [], []
    for name in splits["all"]:
        truth = np.load(f"{data}/gt/{name}.npz")
        frames = list(VideoReader(f"{data}/main/{name}.mp4"))
        assert len(frames) == len(truth["viseme"]) == len(truth["mouth_shape"])
        centres = (np.arange(len(frames)) + 0.5) / FPS
        for phone, (start, end) in zip(truth["phonemes"], truth["phoneme_times"]):
            length = end - start
            held = np.flatnonzero((centres >= start + 0.2 * length) & (centres <= end - 0.2 * length))
            for k in held:
                if phone in ("P", "B", "M"):
                    assert truth["mouth_shape"][k, 0] == 0.0 and truth["viseme"][k] == VISEME_OF["M"]
                    closed_dark.append((mouth_window(frames[k], truth["mouth_center"][k]) < 60).mean())
        for k in np.flatnonzero(truth["mouth_shape"][:, 0] >= 0.8):         # wide open: a, the start of i in 'five'
            open_dark.append((mouth_window(frames[k], truth["mouth_center"][k]) < 60).mean())
    assert closed_dark and open_dark
    assert max(closed_dark) < 0.02 < 0.15 < min(open_dark)      # no dark interior between closed lips


def test_av_jitter_moves_each_clip_s_mouth_off_its_speech_by_whole_frames(grid_corpus, tmp_path):
    """--av_jitter_frames 2: the same speech as the corpus in step (the sound is drawn first), each clip's
    mouth track (visemes and shapes) and phoneme times shifted by its own offset in [-2, 2] frames, which
    gt keeps; the in-step corpus records offset 0. A non-grid corpus refuses the option."""
    from utils.errors import TalkLipError
    data, splits = grid_corpus
    jittered = make_corpus(str(tmp_path), num_clips=6, seed=3, grammar="grid", av_jitter_frames=2)
    assert jittered["all"] == splits["all"]
    offsets = []
    for name in splits["all"]:
        step, off = np.load(f"{data}/gt/{name}.npz"), np.load(f"{tmp_path}/gt/{name}.npz")
        assert int(step["av_offset_frames"]) == 0
        d = int(off["av_offset_frames"])
        offsets.append(d)
        assert -2 <= d <= 2
        np.testing.assert_array_equal(load_audio(f"{tmp_path}/main/{name}.mp4"), load_audio(f"{data}/main/{name}.mp4"))
        n = len(step["viseme"])
        inner = slice(max(0, d), n + min(0, d))          # frame t of the jittered clip shows frame t - d of the other
        shifted = slice(max(0, -d), n - max(0, d))
        np.testing.assert_array_equal(off["viseme"][inner], step["viseme"][shifted])
        np.testing.assert_allclose(off["mouth_shape"][inner], step["mouth_shape"][shifted], atol=1e-6)
        np.testing.assert_allclose(off["phoneme_times"], step["phoneme_times"] + d / FPS, atol=1e-6)
    assert len(set(offsets)) > 1
    with pytest.raises(TalkLipError, match="grid"):
        make_corpus(str(tmp_path / "words"), num_clips=3, grammar="words", av_jitter_frames=1)


def test_mouth_scale_draws_the_same_visemes_smaller(grid_corpus, tmp_path):
    """--mouth_scale 1.0: the same sentences, speech and viseme track as the default 1.3x corpus, the mouth
    drawn smaller: on wide-open frames the dark interior covers less of the window around the mouth, by
    about the area's ratio (1 / 1.3^2 ~ 0.59; the window holds both). Refused off the grid grammar and
    outside 0.5-2."""
    from utils.errors import TalkLipError
    data, splits = grid_corpus
    small = make_corpus(str(tmp_path), num_clips=6, seed=3, grammar="grid", mouth_scale=1.0)
    assert small == splits
    dark = {data: [], str(tmp_path): []}
    for name in splits["all"]:
        ref, other = np.load(f"{data}/gt/{name}.npz"), np.load(f"{tmp_path}/gt/{name}.npz")
        np.testing.assert_array_equal(other["viseme"], ref["viseme"])
        np.testing.assert_array_equal(other["mouth_shape"], ref["mouth_shape"])
        np.testing.assert_array_equal(load_audio(f"{tmp_path}/main/{name}.mp4"), load_audio(f"{data}/main/{name}.mp4"))
        wide = np.flatnonzero(ref["mouth_shape"][:, 0] >= 0.8)
        for folder in dark:
            frames = list(VideoReader(f"{folder}/main/{name}.mp4"))
            dark[folder] += [(mouth_window(frames[k], ref["mouth_center"][k], 14, 8) < 60).mean() for k in wide]
    ratio = np.mean(dark[str(tmp_path)]) / np.mean(dark[data])
    assert 0.4 < ratio < 0.8, ratio
    with pytest.raises(TalkLipError, match="grid"):
        make_corpus(str(tmp_path / "words"), num_clips=3, grammar="words", mouth_scale=1.0)
    with pytest.raises(TalkLipError, match="between 0.5 and 2"):
        make_corpus(str(tmp_path / "huge"), num_clips=3, grammar="grid", mouth_scale=3.0)


def test_speech_snr_puts_noise_under_the_same_speech_and_leaves_the_picture(grid_corpus, tmp_path):
    """--speech_snr_db 0: the same clips, pictures and truth as the noiseless corpus; the sound track is the
    same speech plus noise whose power over the spoken span is the speech's (0 dB, measured on the decoded
    AAC tracks, within 1 dB), and the noise also covers the silence before the first word. Refused off the
    grid grammar and outside -30..60 dB."""
    from utils.errors import TalkLipError
    data, splits = grid_corpus
    noisy = make_corpus(str(tmp_path), num_clips=6, seed=3, grammar="grid", speech_snr_db=0.0)
    assert noisy == splits
    ratios_db = []
    for name in splits["all"][:3]:
        ref, other = np.load(f"{data}/gt/{name}.npz"), np.load(f"{tmp_path}/gt/{name}.npz")
        for key in ref.files:
            np.testing.assert_array_equal(other[key], ref[key])
        for a, b in zip(VideoReader(f"{data}/main/{name}.mp4"), VideoReader(f"{tmp_path}/main/{name}.mp4")):
            np.testing.assert_array_equal(a, b)
        clean, sound = load_audio(f"{data}/main/{name}.mp4"), load_audio(f"{tmp_path}/main/{name}.mp4")
        times = ref["phoneme_times"][ref["phonemes"] != "SIL"]       # the first word's start to the last's end
        start, end = (int(t * AUDIO_RATE_HZ) for t in (times[0, 0], times[-1, 1]))
        speech, noise = clean[start:end].astype(np.float64), (sound - clean)[start:end].astype(np.float64)
        ratios_db.append(10 * np.log10(np.mean(speech ** 2) / np.mean(noise ** 2)))
        lead = sound[:start // 2].astype(np.float64)
        assert np.sqrt(np.mean(lead ** 2)) > 0.5 * np.sqrt(np.mean(speech ** 2))
    assert np.all(np.abs(ratios_db) < 1.0), ratios_db
    with pytest.raises(TalkLipError, match="grid"):
        make_corpus(str(tmp_path / "words"), num_clips=3, grammar="words", speech_snr_db=0.0)
    with pytest.raises(TalkLipError, match="between -30 and 60"):
        make_corpus(str(tmp_path / "loud"), num_clips=3, grammar="grid", speech_snr_db=-40.0)


def test_articulation_gives_each_speaker_a_style_of_their_own(grid_corpus, tmp_path):
    """--articulation 0.5: the same sentences, speech and viseme ids as the corpus without it; each speaker
    keeps one style (gt's ``articulation``, the same in all their clips, within exp(+-0.5)) and speakers
    differ; the shapes are the viseme track at the speaker's coarticulation time times its gains, and the
    pixels show it: a speaker who opens wider draws more dark mouth interior than the plain corpus does
    on the same clip. Refused off the grid grammar and above 1."""
    from preparation.make_synthetic import articulate, speaker_style
    from preparation.visemes import Segment
    from utils.errors import TalkLipError
    data, splits = grid_corpus
    styled = make_corpus(str(tmp_path), num_clips=6, seed=3, grammar="grid", articulation=0.5)
    assert styled == splits
    styles, checked = {}, 0
    for name in splits["all"]:
        ref, other = np.load(f"{data}/gt/{name}.npz"), np.load(f"{tmp_path}/gt/{name}.npz")
        assert "articulation" not in ref.files
        np.testing.assert_array_equal(other["viseme"], ref["viseme"])
        np.testing.assert_array_equal(load_audio(f"{tmp_path}/main/{name}.mp4"), load_audio(f"{data}/main/{name}.mp4"))
        style = other["articulation"]
        assert np.all((style >= np.exp(-0.5) - 1e-6) & (style <= np.exp(0.5) + 1e-6))
        styles.setdefault(name.split("/")[0], []).append(style)
        segments = [Segment(p, float(a), float(b)) for p, (a, b) in zip(ref["phonemes"], ref["phoneme_times"])]
        track, _ = mouth_track(segments, len(ref["viseme"]), FPS, ease_s=EASE_S * float(style[4]))
        np.testing.assert_allclose(other["mouth_shape"], articulate(track, style), atol=1e-5)
        if abs(np.log(style[0])) > 0.15:                    # opening gain past 1.16 or under 0.86
            dark = [np.mean([(mouth_window(f, c, 14, 8) < 60).mean()
                             for f, c in zip(VideoReader(f"{folder}/main/{name}.mp4"), ref["mouth_center"])])
                    for folder in (data, str(tmp_path))]
            assert np.sign(dark[1] - dark[0]) == np.sign(style[0] - 1) and abs(dark[1] / dark[0] - 1) > 0.05, dark
            checked += 1
    assert checked >= 3
    assert len(styles) == 2                                  # 6 clips, 2 speakers of 3 clips each
    for speaker_styles in styles.values():
        np.testing.assert_array_equal(speaker_styles[0], speaker_styles[-1])
    first, second = (v[0] for v in styles.values())
    assert np.abs(first - second).max() > 0.05
    np.testing.assert_array_equal(speaker_style(3, 0, 0.0), np.ones(5))
    with pytest.raises(TalkLipError, match="grid"):
        make_corpus(str(tmp_path / "words"), num_clips=3, grammar="words", articulation=0.5)
    with pytest.raises(TalkLipError, match="between 0 and 1"):
        make_corpus(str(tmp_path / "wild"), num_clips=3, grammar="grid", articulation=1.5)


def test_each_viseme_draws_its_own_mouth(grid_corpus):
    """The mean mouth picture of each viseme class differs from every other class's."""
    data, splits = grid_corpus
    pictures = {}
    for name in splits["all"]:
        truth = np.load(f"{data}/gt/{name}.npz")
        for k, frame in enumerate(VideoReader(f"{data}/main/{name}.mp4")):
            pictures.setdefault(int(truth["viseme"][k]), []).append(mouth_window(frame, truth["mouth_center"][k]).astype(float))
    means = {v: np.mean(p, axis=0) for v, p in pictures.items() if v != 0}
    assert len(means) >= 9                                     # the grammar uses most classes
    for a in means:
        for b in means:
            if a < b and {VISEMES[a][0], VISEMES[b][0]} != {"closed", "silence"}:
                assert np.abs(means[a] - means[b]).mean() > 2.0, (VISEMES[a][0], VISEMES[b][0])


def test_the_speech_carries_the_phonemes_at_their_times():
    rng = np.random.default_rng(0)
    wav, segments = speak_phonemes(["SEE", "BLUE", "AT", "FIVE", "PLEASE"], rng)
    assert [s.phone for s in segments if s.phone != "SIL"] == [p for w in ("SEE", "BLUE", "AT", "FIVE", "PLEASE")
                                                                   for p in LEXICON[w]]
    assert segments[0].start == 0 and abs(segments[-1].end - len(wav) / AUDIO_RATE_HZ) < 1e-3

    def part(seg, a=0.0, b=1.0):
        n0, n1 = int((seg.start + a * (seg.end - seg.start)) * AUDIO_RATE_HZ), int((seg.start + b * (seg.end - seg.start)) * AUDIO_RATE_HZ)
        return wav[n0:n1].astype(np.float64)

    def high_share(x):
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / AUDIO_RATE_HZ)
        return power[freqs > 3000].sum() / power.sum()

    s = next(seg for seg in segments if seg.phone == "S")
    iy = next(seg for seg in segments if seg.phone == "IY")
    b = next(seg for seg in segments if seg.phone == "B")
    assert high_share(part(s)) > 0.7 > 0.2 > high_share(part(iy))          # hiss vs vowel
    rms = lambda x: np.sqrt(np.mean(x ** 2))
    assert rms(part(b, 0.1, 0.6)) < 0.2 * rms(part(iy))                       # a stop's closure is quiet
    assert rms(part(segments[0])) == 0.0                                       # lead silence


def test_mouth_track_eases_between_targets_and_holds_closures():
    from preparation.visemes import Segment
    segments = [Segment("SIL", 0.0, 0.2), Segment("AA", 0.2, 0.4), Segment("M", 0.4, 0.52), Segment("AA", 0.52, 0.72),
                Segment("SIL", 0.72, 1.0)]
    shapes, ids = mouth_track(segments, 25, 25)
    opening = shapes[:, 0]
    assert ids[7] == VISEME_OF["AA"] and ids[11] == VISEME_OF["M"]
    assert opening[11] == 0.0 and opening[7] > 0.8 and opening[15] > 0.8    # closed between two open vowels
    assert 0.05 < opening[5] < opening[6] < opening[7]                     # eases open, no jump
    assert np.all(opening[:3] == 0.0) and np.all(opening[-4:] == 0.0)


def test_held_out_sentences_are_new_combinations(grid_corpus):
    data, splits = grid_corpus
    text = {n: open(f"{data}/main/{n}.txt").read().split("\n")[0][len("Text:  "):] for n in splits["all"]}
    assert len(set(text.values())) == len(text)
    for sentence in text.values():
        assert [w in slot for w, slot in zip(sentence.split(), SLOTS)] == [True] * len(SLOTS)
    assert load_audio(f"{data}/main/{splits['test'][0]}.mp4").shape[0] > AUDIO_RATE_HZ


def test_an_expert_learns_to_read_a_tiny_grammar(tmp_path):
    """Three slots of the grammar (64 sentences, 48 clips); train_expert.py, with the per-frame viseme
    loss, reads the held-out clips (sentences it never saw) far better than its text prior alone (the
    video blanked). Measured after 70 steps at batch 6: token accuracy 0.65 against 0.29 blanked, WER
    0.80 against 1.00 (after 100 steps: 0.81 against 0.36, WER 0.53 against 1.00)."""
    import json
    from tests.conftest import run_module
    data = str(tmp_path / "tiny")
    make_corpus(data, num_clips=48, seed=5, grammar="grid", slots=SLOTS[1:4])
    proc = run_module("train_expert", "--file_dir", data, "--video_root", f"{data}/main", "--word_root", f"{data}/main",
                      "--out", tmp_path / "expert.pt", "--out_json", tmp_path / "expert.json", "--steps", 70,
                      "--batch_size", 6, "--lr", 2e-3, "--viseme_root", f"{data}/gt", "--test_filelist",
                      f"{data}/test.txt", "--device", "cpu", "--no_progress")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "expert.json").read_text())
    assert result["test_wer_blank"] >= 0.5                      # the text prior alone
    assert result["test_token_acc"] >= result["test_token_acc_blank"] + 0.25, result
    assert result["test_wer"] < result["test_wer_blank"], result


def test_a_test_sentence_is_never_a_training_sentence_of_any_seed():
    """grid_splits holds out the same fifth of the grammar for every corpus seed: readers trained on one
    corpus' train split never saw a test sentence of another."""
    from preparation.make_synthetic import grid_sentences, grid_splits
    by_split = {}
    for seed in range(4):
        rng = np.random.default_rng(seed)
        sentences = grid_sentences(300, rng)
        splits = grid_splits(list(range(300)), sentences, rng)
        assert 0.12 < len(splits["test"]) / 300 < 0.28 and 0.12 < len(splits["valid"]) / 300 < 0.28
        for split, members in splits.items():
            by_split.setdefault(split, set()).update(sentences[i] for i in members)
    assert not by_split["test"] & by_split["train"] and not by_split["valid"] & by_split["train"]
    assert not by_split["test"] & by_split["valid"]


@pytest.fixture(scope="module")
def fresh_corpus(tmp_path_factory):
    """A grid corpus of a seed no shipped reader was trained on."""
    data = str(tmp_path_factory.mktemp("fresh"))
    return data, make_corpus(data, num_clips=40, seed=11, grammar="grid")


@pytest.mark.parametrize("reader", ["expert", "expert_2", "expert_3", "observer"])
def test_the_shipped_readers_read_a_fresh_corpus(reader, fresh_corpus, tmp_path):
    """The quickstart's grid readers, trained once and shipped in weights/ (weights/README.md), still
    read the corpus this code draws: a corpus of another seed (its test clips hold sentences the readers
    never saw: the held-out fifth of the grammar is the same for every seed), read through
    `train_expert.py --evaluate`, far better than the text prior alone. A change to the drawing or the
    speech that the shipped files were not retrained for fails here."""
    import json
    from tests.conftest import ROOT, run_module
    shipped = f"{ROOT}/weights/grid_{reader}.pt"
    data, splits = fresh_corpus
    assert len(splits["test"]) >= 4
    proc = run_module("train_expert", "--evaluate", "--init", shipped, "--file_dir", data, "--video_root",
                      f"{data}/main", "--word_root", f"{data}/main", "--test_filelist", f"{data}/test.txt",
                      "--out_json", tmp_path / "reader.json", "--device", "cpu", "--no_progress")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "reader.json").read_text())
    assert result["test_wer"] <= 0.3, result
    assert result["test_wer_blank"] >= 0.8, result
    assert result["trained"]["steps"] > 0


def test_the_shipped_lip_ensemble_shares_the_expert_s_vocabulary_and_not_the_observer_s_weights():
    """grid_expert_2/3 (train.py --lip_ensemble) were made with --vocab_from grid_expert.pt: one ensemble;
    and none of the three is the observer."""
    import torch
    from models.avhubert import load_lip_reader
    from models.avhubert.ensemble import ExpertEnsemble
    from tests.conftest import ROOT
    paths = [f"{ROOT}/weights/grid_expert{tag}.pt" for tag in ("", "_2", "_3")]
    members = [load_lip_reader(p, "") for p in paths]
    ExpertEnsemble(members, paths)
    observer = load_lip_reader(f"{ROOT}/weights/grid_observer.pt", "").state_dict()
    for member in members:
        weights = member.state_dict()
        assert any(not torch.equal(weights[k], observer[k]) for k in weights if k in observer)


def test_evaluate_refuses_a_missing_reader_and_a_file_that_is_no_lip_reader(tmp_path):
    """train_expert.py --evaluate without --init, or with a checkpoint that is not a seq2seq reader with
    its dictionary: one line that names the fix, no traceback, no output file."""
    import torch
    from tests.conftest import run_module
    common = ["--file_dir", tmp_path, "--video_root", tmp_path, "--word_root", tmp_path,
              "--out_json", tmp_path / "reader.json"]
    missing = run_module("train_expert", "--evaluate", *common)
    assert missing.returncode == 2 and "--evaluate reads with the reader given by --init" in missing.stderr
    not_reader = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, not_reader)
    wrong = run_module("train_expert", "--evaluate", "--init", not_reader, *common)
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1 and str(not_reader) in wrong.stderr, wrong.stderr
    assert not (tmp_path / "reader.json").exists()
