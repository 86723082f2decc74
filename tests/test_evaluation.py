"""The paper's metrics: PSNR/SSIM, LSE-C/LSE-D, observer WERs, and the one-command table."""
import json
import math
import os
import subprocess
import sys

import jiwer
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from evaluation.sync_eval import SyncNet, load_syncnet, lse, offset_scores
from evaluation.visual_quality import psnr, ssim
from utils.wer import error_rates
from models.conformer_lip_reading import (CHAR_TO_INDEX, ConformerConfig, ConformerLipReader,
                                          RelPositionMultiHeadedAttention, load_conformer_lip_reader,
                                          required_length, teacher_forced_error_rates, text_to_indices)
from tests.conftest import ROOT, run_module
from utils.errors import CheckpointError, TalkLipError

TINY_CONFORMER = ConformerConfig(adim=32, aheads=4, eunits=64, elayers=2, dlayers=2, cnn_module_kernel=7)


def faces(seed, n=2):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 96, 96, 3)).astype(np.uint8)
    smooth = np.clip(base.astype(int) // 4 + np.linspace(0, 150, 96)[None, :, None, None], 0, 255).astype(np.uint8)
    return base, smooth


def test_psnr_is_float_and_legacy_mode_wraps_around():
    a, b = faces(0)
    for x, y in [(a[0], a[1]), (b[0], b[1]), (a[0], b[0])]:
        mse = np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)
        assert psnr(x, y) == pytest.approx(10 * math.log10(255.0 ** 2 / mse), abs=1e-12)
        wrapped = np.mean(((x.astype(np.int64) - y.astype(np.int64)) % 256) ** 2 % 256)
        assert psnr(x, y, legacy_uint8=True) == pytest.approx(10 * math.log10(255.0 ** 2 / wrapped), abs=1e-12)
    # the wrap-around shrinks the error, so the paper's PSNR is inflated
    assert psnr(a[0], b[0], legacy_uint8=True) > psnr(a[0], b[0]) + 1
    assert psnr(a[0], a[0]) == 100.0


def test_ssim_matches_scikit_image():
    a, b = faces(1)
    noisy = np.clip(b[0].astype(int) + np.random.default_rng(2).integers(-30, 30, b[0].shape), 0, 255).astype(np.uint8)
    for x, y in [(a[0], a[1]), (b[0], b[1]), (b[0], noisy), (b[0], b[0])]:
        expected = structural_similarity(x, y, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=255)
        assert ssim(x, y) == pytest.approx(expected, abs=1e-10)


def test_offset_scores_recover_a_known_shift_and_match_the_original_loop():
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(40, 16, generator=gen)
    for k in (-3, 0, 4):
        audio = torch.randn(40, 16, generator=gen)
        for t in range(40):                        # audio[t + k] matches video[t]
            if 0 <= t + k < 40:
                audio[t + k] = video[t]
        scores = offset_scores(video, audio, vshift=6)
        assert scores["offset"] == -k
        # the original's per-frame loop, written out
        padded = torch.nn.functional.pad(audio, (0, 0, 6, 6))
        dists = torch.stack([torch.nn.functional.pairwise_distance(video[[i]].repeat(13, 1), padded[i:i + 13])
                             for i in range(40)], 1)
        mdist = dists.mean(1)
        assert scores["lse_d"] == pytest.approx(float(mdist.min()), rel=1e-6)
        assert scores["lse_c"] == pytest.approx(float(mdist.median() - mdist.min()), rel=1e-5)


class ThresholdSyncNet(SyncNet):
    """SyncNet whose features are constructed so that sync peaks where brightness follows loudness:
    the lip feature is the middle frame's brightness, the audio feature whether the middle MFCC
    frames are loud. Everything around them (MFCC, windows, batching, offsets) is the real code."""

    def forward_lip(self, video):
        return video[:, :, 2].mean(dim=(1, 2, 3))[:, None] / 255.0

    def forward_aud(self, mfcc):
        return (mfcc[:, 0, 0, 8:10].mean(1, keepdim=True) > 5.0).float()   # wholly inside frame 2


def test_lse_recovers_an_audio_shift_on_a_synthetic_clip():
    rng = np.random.default_rng(3)
    pattern = rng.integers(0, 2, 80)
    frames = np.repeat((pattern * 255).astype(np.uint8)[:, None, None, None], 224, 1).repeat(224, 2).repeat(3, 3)
    for shift in (3, -2):
        loud = np.roll(pattern, shift)               # audio k frames late: offset -k
        t = np.arange(640) / 16000
        tone = np.sin(2 * np.pi * 440 * t) * np.hanning(640)      # no edges for pre-emphasis to spike on
        wav = np.concatenate([tone * (0.5 if on else 1e-4) for on in loud])
        result = lse(frames, wav.astype(np.float32), ThresholdSyncNet().eval(), vshift=8, batch_size=7)
        assert result["offset"] == -shift
        assert result["lse_d"] < 0.05 and result["lse_c"] > 0.2       # only the clip edges disagree


def test_syncnet_loads_the_original_legacy_format_and_refuses_wrong_keys(tmp_path):
    torch.manual_seed(0)
    model = SyncNet().eval()
    path = tmp_path / "syncnet_v2.model"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)   # the 2017 format
    loaded = load_syncnet(str(path))
    x = torch.rand(2, 3, 5, 224, 224) * 255
    a = torch.randn(2, 1, 13, 20)
    assert torch.equal(loaded.forward_lip(x), model.forward_lip(x))
    assert torch.equal(loaded.forward_aud(a), model.forward_aud(a))
    state = model.state_dict()
    state["netfcaud.9.weight"] = state.pop("netfcaud.3.weight")
    torch.save(state, tmp_path / "bad.model")
    with pytest.raises(CheckpointError, match="missing.*netfcaud.3.weight.*unexpected.*netfcaud.9.weight"):
        load_syncnet(str(tmp_path / "bad.model"))


def test_rel_shift_picks_the_relative_position_of_each_query_key_pair():
    t, d = 5, 8
    q, p = torch.randn(1, 1, t, d), torch.randn(1, 1, 2 * t - 1, d)     # p rows: positions t-1 .. -(t-1)
    shifted = RelPositionMultiHeadedAttention.rel_shift(q @ p.transpose(-2, -1))
    for i in range(t):
        for j in range(t):
            row = (t - 1) - (i - j)                  # row of relative position i - j
            assert shifted[0, 0, i, j] == pytest.approx(float(q[0, 0, i] @ p[0, 0, row]), abs=1e-5)


def test_teacher_forced_rates_agree_with_jiwer_on_known_strings():
    ref, hyp = "THE CAT SAT ON THE MAT", "THE BAT SAT ON MAT"
    target, pred = text_to_indices(ref), text_to_indices(hyp)
    pred = pred + [CHAR_TO_INDEX["X"]] * (len(target) - len(pred))    # predictions are len(target) long
    cer, wer = teacher_forced_error_rates(pred + [39], target)
    hyp_text = hyp + "X" * (len(target) - len(text_to_indices(hyp)))
    assert wer == pytest.approx(jiwer.wer(ref, hyp_text))
    assert cer == pytest.approx(jiwer.cer(ref, hyp_text))
    assert required_length(text_to_indices("BOOK")) == 5
    assert error_rates(["A B C D"], ["A X C"]) ["wer"] == pytest.approx(0.5)


def test_conformer_checkpoint_round_trip_and_causal_decoder(tmp_path):
    torch.manual_seed(0)
    model = ConformerLipReader(TINY_CONFORMER).eval()
    path = tmp_path / "conformer.pth"
    torch.save(model.state_dict(), path)
    loaded = load_conformer_lip_reader(str(path))
    assert loaded.cfg == TINY_CONFORMER
    video = torch.randn(1, 12, 112, 112)
    n, req = torch.tensor([12]), torch.tensor([14])
    target = torch.tensor(text_to_indices("HELLO"))
    logits = loaded.teacher_forced_logits(video, n, req, [target])
    assert torch.allclose(logits, model.teacher_forced_logits(video, n, req, [target]))
    other = loaded.teacher_forced_logits(video, n, req, [torch.tensor(text_to_indices("HELXX"))])
    assert torch.allclose(logits[0, :4], other[0, :4], atol=1e-5)           # position t sees tokens < t only
    assert not torch.allclose(logits[0, 4:], other[0, 4:], atol=1e-5)
    state = model.state_dict()
    del state["ctc.ctc_lo.weight"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="missing.*ctc.ctc_lo.weight"):
        load_conformer_lip_reader(str(tmp_path / "bad.pth"))


@pytest.fixture(scope="module")
def observers(tmp_path_factory, seq2seq_checkpoint):
    folder = tmp_path_factory.mktemp("observers")
    torch.manual_seed(1)
    torch.save(SyncNet().state_dict(), folder / "syncnet_v2.model", _use_new_zipfile_serialization=False)
    torch.save(ConformerLipReader(TINY_CONFORMER).state_dict(), folder / "conformer.pth")
    return {"syncnet": folder / "syncnet_v2.model", "observer1": seq2seq_checkpoint[0],
            "observer2": folder / "conformer.pth"}


def test_eval_lrs_prints_the_table_on_synthesized_test_split(tmp_path, corpus, one_shard, synthesized_test, observers):
    data, splits = corpus
    synt = synthesized_test
    filelist = tmp_path / "test.txt"
    filelist.write_text("\n".join(splits["test"]) + "\n")
    cmd = ["bash", os.path.join(ROOT, "evaluation", "eval_lrs.sh"), "--synt_root", synt, "--filelist", filelist,
           "--orig_root", f"{data}/main", "--bbx_root", one_shard / "bbx", "--syncnet_path", observers["syncnet"],
           "--observer1_path", observers["observer1"], "--observer2_path", observers["observer2"],
           "--beam", "2", "--out_dir", tmp_path / "eval", "--no_progress"]
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 0, proc.stderr
    header = [line for line in proc.stdout.splitlines() if line.startswith("| clips")][0]
    for column in ("PSNR", "SSIM", "LSE-C", "LSE-D", "WER1", "WER2"):
        assert column in header
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["summary"]["visual"]["clips"] == len(splits["test"])
    assert 0 < results["summary"]["visual"]["ssim"] <= 1
    assert (tmp_path / "eval" / "per_clip.csv").read_text().count("\n") == len(splits["test"]) + 1
    # a rerun takes every clip from the cache
    again = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, PYTHON=sys.executable))
    assert again.returncode == 0 and again.stdout == proc.stdout


def test_visual_quality_cli_and_missing_files(tmp_path, corpus, one_shard, synthesized_test):
    data, splits = corpus
    filelist = tmp_path / "list.txt"
    filelist.write_text(splits["test"][0] + "\n")
    common = ["--orig_root", f"{data}/main", "--bbx_root", one_shard / "bbx", "--filelist", filelist,
              "--cache_dir", tmp_path / "cache"]
    same = run_module("evaluation.visual_quality", "--synt_root", f"{data}/main", *common, "--out_json", tmp_path / "s.json")
    assert same.returncode == 0, same.stderr
    assert json.loads((tmp_path / "s.json").read_text())["psnr"] == 100.0       # a video against itself
    missing = run_module("evaluation.sync_eval", "--data_root", synthesized_test, "--filelist", filelist,
                         "--initial_model", tmp_path / "nope.model")
    assert missing.returncode == 2 and "nope.model does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


def copy_clip(src, dst, keep=None):
    """Re-encode ``src`` to ``dst`` (its first ``keep`` frames), e.g. a synthesized clip."""
    from utils.video import VideoReader, VideoWriter
    with VideoReader(str(src)) as reader:
        fps, w, h = reader.fps, reader.width, reader.height
        frames = list(reader)[:keep]
    os.makedirs(os.path.dirname(str(dst)), exist_ok=True)
    with VideoWriter(str(dst), fps, w, h) as writer:
        for frame in frames:
            writer.write(frame)


def test_the_cache_follows_the_synthesized_file_and_partial_results_are_loud(tmp_path, corpus, one_shard):
    from evaluation.common import ClipRun
    from evaluation.visual_quality import VisualQualityOptions, evaluate
    data, splits = corpus
    names = splits["all"][:2]
    synt = tmp_path / "synt"
    for name in names:
        copy_clip(f"{data}/main/{name}.mp4", synt / f"{name}.mp4")
    opts = VisualQualityOptions(synt_root=str(synt), orig_root=f"{data}/main", bbx_root=str(one_shard / "bbx"))
    run = ClipRun(cache_dir=str(tmp_path / "cache"), progress=False)
    first = evaluate(opts, run, names)
    cached = tmp_path / "cache" / "visual_quality" / f"{names[0]}.json"
    stamp = cached.stat().st_mtime_ns
    again = evaluate(opts, run, names)
    assert again["psnr"] == first["psnr"] and cached.stat().st_mtime_ns == stamp      # reused, unchanged
    # re-synthesize one clip differently (another checkpoint, here: darker): its number must change
    from utils.video import VideoReader, VideoWriter
    with VideoReader(f"{data}/main/{names[0]}.mp4") as reader:
        fps, w, h, frames = reader.fps, reader.width, reader.height, list(reader)
    with VideoWriter(str(synt / f"{names[0]}.mp4"), fps, w, h) as writer:
        for frame in frames:
            writer.write((frame // 2).astype(np.uint8))
    fresh = evaluate(opts, run, names)
    assert fresh["per_clip"][0]["psnr"] < first["per_clip"][0]["psnr"] - 5
    assert fresh["per_clip"][1]["psnr"] == first["per_clip"][1]["psnr"]
    # a synthesized clip cut short fails instead of being scored over its first frames
    copy_clip(f"{data}/main/{names[1]}.mp4", synt / f"{names[1]}.mp4", keep=20)
    cut = evaluate(opts, run, names)
    assert cut["failed"] == [names[1]] and cut["clips"] == 1 and not cut["complete"]
    # the CLI: a missing clip names --synt_root, the count goes next to the number, exit 3 unless allowed
    filelist = tmp_path / "list.txt"
    filelist.write_text("\n".join([names[0], "nobody/00001"]) + "\n")
    args = ["--synt_root", synt, "--orig_root", f"{data}/main", "--bbx_root", one_shard / "bbx", "--filelist",
            filelist, "--cache_dir", tmp_path / "cache", "--no_progress"]
    proc = run_module("evaluation.visual_quality", *args)
    assert proc.returncode == 3, proc.stderr
    assert "over 1 of 2 listed clips (1 missing, 0 failed)" in proc.stdout
    assert "check --synt_root" in proc.stderr and "--allow_missing" in proc.stderr.strip().splitlines()[-1]
    assert run_module("evaluation.visual_quality", *args, "--allow_missing").returncode == 0


def test_box_files_and_file_lists_are_checked_with_one_line(tmp_path):
    from utils.corpus import load_boxes
    from utils.errors import MediaError, TalkLipError
    from utils.fileio import read_filelist
    os.makedirs(tmp_path / "spk")
    np.save(tmp_path / "spk" / "pickled.npy", np.array([{"box": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "spk" / "flat.npy", np.arange(10))
    for name in ("pickled", "flat"):
        with pytest.raises(MediaError) as err:
            load_boxes(str(tmp_path), f"spk/{name}")
        message = str(err.value)
        assert f"{name}.npy" in message and "rerun bbx_extract" in message and "\n" not in message
        assert "allow_pickle" not in message
    for bad in ("../outside/x", "/etc/passwd", "spk/../../x"):
        (tmp_path / "list.txt").write_text(f"spk/ok\n{bad}\n")
        with pytest.raises(TalkLipError, match="entry 2 .* leaves the data folders"):
            read_filelist(str(tmp_path / "list.txt"))


def test_the_leakage_measure_separates_a_dub_that_copies_its_reference_from_one_that_does_not(corpus,
                                                                                              talklip_checkpoint,
                                                                                              tmp_path):
    """Silent dubs of corpus clips. A generator that copies its reference into the mouth (a TalkLip whose
    render returns the reference face), shown each frame's own crop (--reference own), moves the mouth
    under silence with the clip's own opening: motion near the clip's own and leak_r near 1. The same
    copier shown one fixed reference (first), and the random generator, keep it still. The clips'
    own reading is their motion."""
    from evaluation.common import ClipRun
    from evaluation.leakage import LeakageOptions, evaluate
    from face_detection import CascadeDetector

    class Copier(type(talklip_checkpoint[1])):
        def render(self, faces_in, audio_emb):
            return faces_in[:, 3:]
    _, generator = talklip_checkpoint
    copier = Copier(generator.audio_encoder.w2v_model.cfg, generator.config).eval()
    data, splits = corpus
    names = splits["train"][:3]
    found = {}
    for name, model, reference in (("copy_own", copier, "own"), ("copy_first", copier, "first"),
                                   ("random_own", generator, "own")):
        opts = LeakageOptions(f"{data}/main", str(tmp_path / name), gt_root=f"{data}/gt", reference=reference)
        found[name] = evaluate(opts, ClipRun(progress=False), model, CascadeDetector(), names=names)
        assert found[name]["clips"] == 3 and found[name]["complete"]
    own = found["copy_own"]
    assert own["source_motion"] > 5 and own["motion"] > 0.6 * own["source_motion"] and own["leak_r"] > 0.8
    for still in ("copy_first", "random_own"):
        assert found[still]["motion"] < 0.2 * own["source_motion"] and abs(found[still]["leak_r"]) < 0.5, still
    with pytest.raises(TalkLipError, match="needs --gt_root"):
        evaluate(LeakageOptions(f"{data}/main", str(tmp_path / "x")), ClipRun(progress=False), generator,
                 CascadeDetector(), names=names)
