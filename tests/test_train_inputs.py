"""train.py and the quickstart refuse what they cannot train on, before the first step: bad options, missing or
mismatched inputs, an expert that cannot spell the transcripts, a full or unusable disk; a long clip trains on a
bounded segment. (Split from test_train.py so the suite's two workers share the training tests.)"""
import os
import shutil
import subprocess

import pytest
import torch

from tests.conftest import ROOT
from models.avhubert import load_avhubert
from tests.test_train import config, without_transcripts
from utils.corpus import read_transcript
from training.trainer import Trainer
from utils.errors import TalkLipError


@pytest.mark.parametrize("flags, message", [(["--precision", "fp64"], "--precision must be auto, bf16 or fp32"),
                                            (["--grammar", "poems"], "--grammar must be grid or words"),
                                            (["--stage2_from", "nope"], "--stage2_from must be a quickstart run "
                                             "folder with train/state_step000000600.pt (where stage 2 begins under "
                                             "--stage_steps 400,200,300)"),
                                            (["--stage2_from", "nope", "--stage_steps", "800,200,600"],
                                             "--stage2_from must be a quickstart run folder with train/"
                                             "state_step000001000.pt (where stage 2 begins under --stage_steps "
                                             "800,200,600)"),
                                            (["--lr_hold", "300"], "--lr_hold must be a number of steps below stage "
                                             "2's 300 (--stage_steps 400,200,300)"),
                                            (["--lr_hold", "-5"], "--lr_hold must be a number of steps below stage "
                                             "2's 300 (--stage_steps 400,200,300)"),
                                            (["--av_shift", "two"], "--av_shift must be a number of frames"),
                                            (["--mouth_scale", "big"], "--mouth_scale must be a number from 0.5 to 2 "
                                             "(x the photo's mouth)"),
                                            (["--mouth_scale", "3"], "--mouth_scale must be a number from 0.5 to 2 "
                                             "(x the photo's mouth)"),
                                            (["--speech_snr", "loud"], "--speech_snr must be a number of dB from "
                                             "-30 to 60"),
                                            (["--speech_snr", "-45"], "--speech_snr must be a number of dB from "
                                             "-30 to 60"),
                                            (["--articulation", "1.5"], "--articulation must be a number from 0 "
                                             "to 1"),
                                            (["--readers_from", "nope"], "--readers_from (without --train_readers) must "
                                             "be a quickstart run folder with the expert.pt and observer.pt its "
                                             "--train_readers made")])
def test_the_quickstart_refuses_bad_options_in_one_line_before_writing(tmp_path, flags, message):
    """The experiment driver behind quickstart.sh (bench/experiment.sh) checks every option; quickstart.sh passes
    the main job's through (--precision, --grammar) and refuses the research ones, naming where they are."""
    out = tmp_path / "run"
    main_job = flags[0] in ("--precision", "--grammar")
    script = "quickstart.sh" if main_job else os.path.join("bench", "experiment.sh")
    proc = subprocess.run(["bash", os.path.join(ROOT, script), "--out_dir", str(out), *flags],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {message}, not {flags[1]}"
    assert not out.exists()


def test_the_quickstart_refuses_a_mouth_scale_its_shipped_readers_cannot_read(tmp_path):
    """--mouth_scale without --train_readers: the shipped readers were trained on the default mouth, so the run
    would score with readers that cannot read it; refused in one line before anything is written."""
    out = tmp_path / "run"
    proc = subprocess.run(["bash", os.path.join(ROOT, "bench", "experiment.sh"), "--out_dir", str(out), "--mouth_scale",
                           "1.0"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: --mouth_scale needs --grammar grid and --train_readers or --readers_from (the shipped readers read the "
        "default mouth only)")
    assert not out.exists()


def test_the_quickstart_lists_and_takes_the_main_job_s_options_only(tmp_path):
    """quickstart.sh --help names the main job's options and no research knob; a research option is refused in
    one line that says where it lives."""
    help_text = subprocess.run(["bash", os.path.join(ROOT, "quickstart.sh"), "--help"], capture_output=True,
                               text=True).stdout
    for option in ("--out_dir", "--seed", "--precision", "--ablation", "--train_readers", "--grammar"):
        assert option in help_text
    for knob in ("--av_jitter", "--av_shift", "--articulation", "--speech_snr", "--lr_hold", "--stage2_from",
                 "--readers_from", "--lip_w", "--stage_steps", "--mouth_scale"):
        assert knob not in help_text
        proc = subprocess.run(["bash", os.path.join(ROOT, "quickstart.sh"), "--out_dir", str(tmp_path / "r"), knob, "1"],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.strip() == (
            f"error: unknown option {knob} (see --help; the research options are bench/experiment.sh's)")
    assert not (tmp_path / "r").exists()


def test_missing_clip_inputs_and_a_missing_word_root_are_refused_before_training(corpus, one_shard, tiny_expert,
                                                                                  tmp_path):
    """A listed clip without face boxes (or audio, or video) stops train.py before any step, in one line
    naming it; so does a --word_root that does not exist (it was accepted silently)."""
    data, splits = corpus
    bbx = tmp_path / "bbx"
    shutil.copytree(one_shard / "bbx", bbx)
    victim = splits["valid"][0]
    os.remove(bbx / f"{victim}.npy")
    with pytest.raises(TalkLipError, match=rf"1 of \d+ listed clips lack their inputs, e\.g\. {victim} \(face boxes"):
        Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "ck", bbx_root=str(bbx)))
    with pytest.raises(TalkLipError, match="--word_root .*nowhere is not a folder"):
        Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "ck", word_root=str(tmp_path / "nowhere")))
    assert not (tmp_path / "ck").exists()


def test_a_failed_pseudo_label_is_not_cached_and_stage_2_says_who_lacks_a_target(corpus, one_shard, tiny_expert,
                                                                                   tmp_path):
    """A clip whose video cannot be read gets no lip target in this run, and nothing is cached: once the
    video is back, the next run labels it. A run that reaches the lip loss with unlabelled clips says so."""
    from models.avhubert import load_lip_reader
    from training.labels import NONE, PSEUDO, clip_labels, pseudo_label_path
    data, splits = corpus
    victim = splits["train"][0]
    others = [n for part in splits.values() for n in part if n != victim]
    words, bbx = without_transcripts(corpus, one_shard, tmp_path, keep=others)
    videos = tmp_path / "videos"
    shutil.copytree(f"{data}/main", videos)
    os.replace(videos / f"{victim}.mp4", tmp_path / "away.mp4")
    (videos / f"{victim}.mp4").write_bytes(b"not a video")
    expert = load_lip_reader(tiny_expert, "")
    said = []
    labels = clip_labels([victim], words, bbx, str(videos), expert, ["id"], 1, True, said.append)
    assert labels[victim] == (NONE, "") and not os.path.exists(pseudo_label_path(bbx, victim))
    assert any("failed" in line and "in this run" in line for line in said)
    os.replace(tmp_path / "away.mp4", videos / f"{victim}.mp4")
    labels = clip_labels([victim], words, bbx, str(videos), expert, ["id"], 1, True, said.append)
    assert labels[victim][0] in (PSEUDO, NONE) and os.path.exists(pseudo_label_path(bbx, victim))
    trainer = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "ck", word_root=words, bbx_root=bbx,
                             start_stage=2))
    trainer.data.labels = {**trainer.data.labels, victim: (NONE, "")}
    trainer.start()
    log = open(tmp_path / "ck" / "talklip.log").read()
    assert f"lacking a transcript or pseudo-label (e.g. {victim})" in log


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MB tmpfs (root only; skips elsewhere), unmounted after the test."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_prunes_old_steps_then_refuses_in_one_line(small_disk):
    """Checkpoints on a full disk: older steps are removed to make room (the newest complete one stays)
    and the write succeeds; when even that is not enough, one line names the folder and the fix, no
    temporary is left, and the states already there still load."""
    from training import checkpoints
    def files(kb):
        blob = torch.arange(kb * 256, dtype=torch.float32)          # kb KiB
        return {"w": blob}, {"w": blob.clone()}, {"w": blob.clone(), "step": kb}
    folder = str(small_disk)
    for step in (1, 2):
        checkpoints.write_step(folder, step, *files(200), keep_last=5)
    checkpoints.write_step(folder, 3, *files(200), keep_last=5)      # 1.8 MB in all would not fit
    assert [s for s, _ in checkpoints.state_files(folder)] == [2, 3]
    with pytest.raises(checkpoints.NoSpaceError) as error:
        checkpoints.write_step(folder, 4, *files(2000), keep_last=5)
    assert str(error.value) == (f"no space left in {folder} to save checkpoint_step000000004.pth: free space there "
                                f"or choose another --checkpoint_dir (then resume)")
    assert not [f for f in os.listdir(folder) if f.startswith(".")]
    assert torch.load(checkpoints.state_files(folder)[-1][1])["step"] == 200


def test_an_unusable_checkpoint_folder_is_refused_in_one_line(corpus, one_shard, tiny_expert, tmp_path):
    """--checkpoint_dir under a file, or on a read-only disk: one line naming it, before training."""
    (tmp_path / "a_file").write_text("")
    with pytest.raises(TalkLipError, match="a_file/ck cannot be a folder: a file stands in its path"):
        Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "a_file" / "ck"))
    readonly = tmp_path / "ro"
    readonly.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(readonly)], capture_output=True)
    if mounted.returncode != 0:
        os.chmod(readonly, 0o555)
        if os.access(readonly, os.W_OK):
            pytest.skip("neither a read-only mount nor a read-only folder can be made here")
    try:
        with pytest.raises(TalkLipError, match="ro is not writable: .* choose a writable folder"):
            Trainer(config(corpus, one_shard, tiny_expert, readonly))
    finally:
        subprocess.run(["umount", "-l", str(readonly)], capture_output=True)


def test_a_long_clip_trains_on_a_bounded_segment(corpus, one_shard, tiny_expert, monkeypatch, capsys):
    """A clip longer than MAX_CLIP_FRAMES is read as one segment of that many frames (random in training,
    the first in validation), its boxes and audio rows cut to match, without the lip target (its transcript
    covers the whole clip): what a step holds no longer grows with the clip (a 61 s clip: 0.8 -> 7.1 GB)."""
    import numpy as np
    from training import data as training_data
    from training.data import TalkLipDataset
    from training.labels import TRANSCRIPT
    from utils.audio import AUDIO_RATE_HZ, audio_visual_align, load_audio, talklip_features
    from utils.video import VideoReader
    data, splits = corpus
    name = splits["train"][0]
    labels = {name: (TRANSCRIPT, read_transcript(f"{data}/main", name))}
    codec = load_avhubert(tiny_expert).codec

    def item(train):
        dataset = TalkLipDataset("train", data, f"{data}/main", str(one_shard / "audio"), str(one_shard / "bbx"),
                                 labels, codec, train=train, names=[name], windows_per_clip=2)
        return dataset[0]
    whole = item(True)
    assert len(whole["target"]) > 0
    monkeypatch.setattr(training_data, "MAX_CLIP_FRAMES", 20)
    frames = np.stack(list(VideoReader(f"{data}/main/{name}.mp4")))
    feats = audio_visual_align(talklip_features(load_audio(f"{one_shard}/audio/{name}.wav"), AUDIO_RATE_HZ),
                               len(frames), mode="end")
    for train in (True, False):
        cut = item(train)
        assert cut["frames"].shape[0] == cut["boxes"].shape[0] == cut["audio"].shape[0] == 20
        assert cut["target"] == [] and int(cut["picked"].max()) < 20
        first = next(k for k in range(len(frames) - 19) if np.array_equal(frames[k], cut["frames"][0].numpy()))
        assert first == 0 or train
        np.testing.assert_array_equal(cut["audio"].numpy(), feats[first:first + 20])
    assert capsys.readouterr().err.count("trains on 20-frame segments") == 2      # once per dataset


def test_a_clip_whose_audio_stops_early_is_named_and_left_out_above_the_tolerance(corpus, one_shard, tiny_expert,
                                                                                  tmp_path, capsys):
    """A training clip whose audio ends before its video trained silently against zero-padded silence: the
    pre-check names it with both lengths, keeps it within --max_audio_gap and leaves it out beyond."""
    import soundfile
    data, splits = corpus
    audio = tmp_path / "audio"
    shutil.copytree(one_shard / "audio", audio)
    victim = splits["train"][0]
    wav, rate = soundfile.read(audio / f"{victim}.wav")
    soundfile.write(audio / f"{victim}.wav", wav[:len(wav) - int(0.3 * rate)], rate)
    kept = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "a", audio_root=str(audio)))
    err = capsys.readouterr().err
    assert victim in kept.data.train_set.names
    assert f"warning: {victim}: its audio lasts" in err and "train against silence (within --max_audio_gap 0.5 s)" in err
    strict = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "b", audio_root=str(audio), max_audio_gap=0.2))
    assert victim not in strict.data.train_set.names
    assert len(strict.data.train_set.names) == len(kept.data.train_set.names) - 1
    assert "left out (more than --max_audio_gap 0.2 s short)" in capsys.readouterr().err


def test_an_expert_that_cannot_spell_the_transcripts_is_refused(corpus, one_shard, tmp_path):
    """An expert trained on another word list turns the targets into <unk> (here all of them) and still shows a
    plausible token accuracy: train.py refuses it, naming the share of unknown pieces."""
    from training.expert import build_codec, new_model, save_expert
    codec = build_codec(["aa ab ba bb", "ab ab aa"] * 30, 8)           # its pieces spell a and b only
    other = tmp_path / "other_expert.pt"
    save_expert(new_model("tiny", len(codec.dictionary)), codec, str(other))
    with pytest.raises(TalkLipError, match=r"\d+% of the transcripts' pieces \(\d+ of \d+\) are <unk> in .*other_expert.pt"):
        Trainer(config(corpus, one_shard, str(other), tmp_path / "ck"))
