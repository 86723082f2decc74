"""GRID as a dataset (preparation/grid.py) on the real clips of ../shared/data/grid (skipped without them): the
split, the framing, every bad input the command must refuse in one line, and the measures of real mouths."""
import glob
import os
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from preparation import grid
from tests.conftest import ROOT, run_module

GRID = os.path.join(ROOT, "..", "shared", "data", "grid")
needs_grid = pytest.mark.skipif(not os.path.isdir(os.path.join(GRID, "s1")),
                                reason="../shared/data/grid (GRID s1) is not here")
GOOD = ("bbaf2n", "bbas3a", "bbiz1s", "bgbn8n", "brif6p", "lbij8p")   # real clips, .mp4 and .mpg (sgib8n.mpg: damaged)
HELD_OUT = ("bbiz1s", "bgbn8n", "brif6p")                     # of them, s1 test sentences no reader trained on
DAMAGED = "sgib8n"                                  # decodes with a damaged macroblock


def link_clip(root, ident, speaker="s1", as_ident=None, align=True):
    as_ident = as_ident or ident
    os.makedirs(f"{root}/{speaker}", exist_ok=True)
    os.makedirs(f"{root}/alignments/{speaker}", exist_ok=True)
    video = glob.glob(f"{GRID}/s1/{ident}.*")[0]
    os.symlink(os.path.abspath(video), f"{root}/{speaker}/{as_ident}{os.path.splitext(video)[1]}")
    if align:
        shutil.copy(f"{GRID}/alignments/s1/{ident}.align", f"{root}/alignments/{speaker}/{as_ident}.align")


def temporaries(folder):
    return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if ".tmp-" in f]


def test_the_split_is_by_sentence_fixed_and_documented():
    words = "BIN BLUE AT F TWO NOW".split()
    assert grid.split_of(words) == grid.split_of([w.lower() for w in words])     # a sentence, not a spelling
    assert grid.split_of(words) == "train"      # pinned: changing the rule moves every split (SPLIT_DOC)
    # over the whole grammar every part is used in about its share
    rng = np.random.default_rng(0)
    parts = [grid.split_of([slot[rng.integers(len(slot))] for slot in grid.GRAMMAR]) for _ in range(3600)]
    share = {p: parts.count(p) / len(parts) for p in ("train", "valid", "test")}
    assert 0.04 < share["test"] < 0.075 and 0.04 < share["valid"] < 0.075, share


@needs_grid
def test_the_split_of_the_shared_s1_sentences_is_800_50_50():
    sentences = [grid.read_alignment(p).words for p in sorted(glob.glob(f"{GRID}/alignments/s1/*.align"))]
    parts = [grid.split_of(s) for s in sentences]
    assert (parts.count("train"), parts.count("valid"), parts.count("test")) == (800, 50, 50)
    by_sentence = {}
    for s, p in zip(sentences, parts):
        by_sentence.setdefault(s, set()).add(p)
    assert all(len(p) == 1 for p in by_sentence.values())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A GRID folder of real clips and every kind of bad input, prepared once through the command."""
    if not os.path.isdir(os.path.join(GRID, "s1")):
        pytest.skip("../shared/data/grid (GRID s1) is not here")
    root = str(tmp_path_factory.mktemp("grid_in"))
    for ident in GOOD + (DAMAGED,):
        link_clip(root, ident)
    link_clip(root, "bbaf2n", speaker="s9", as_ident="bbaf2n")      # the same sentence, another speaker
    link_clip(root, "bbaf3s", as_ident="noalig", align=False)         # a video without its alignment
    shutil.copy(f"{GRID}/alignments/s1/bbal6n.align", f"{root}/alignments/s1/novide.align")   # and the reverse
    link_clip(root, "bbal7s", as_ident="toolng")                      # an alignment longer than its video
    with open(f"{root}/alignments/s1/toolng.align", "a") as handle:
        handle.write("74500 99000 sil\n")
    link_clip(root, "bbal8p", as_ident="banana")                      # a word outside the grammar
    text = open(f"{root}/alignments/s1/banana.align").read().replace(" bin", " banana")
    open(f"{root}/alignments/s1/banana.align", "w").write(text)
    os.makedirs(f"{root}/s5/video")                                   # a speaker folder with no clips
    out = str(tmp_path_factory.mktemp("grid_out"))
    result = run_module("preparation.grid", "--grid_root", root, "--out_dir", out, "--no_progress", "--nshard", 1,
                        timeout=600)
    return root, out, result


def test_grid_is_prepared_into_the_lrs2_layout(prepared):
    _, out, result = prepared
    assert result.returncode == 3, result.stderr            # some clips left out, the rest prepared
    listed = open(f"{out}/filelist.txt").read().split()
    assert sorted(listed) == sorted([f"s1/{i}" for i in GOOD + (DAMAGED,)] + ["s9/bbaf2n"])
    for name in listed:
        assert open(f"{out}/main/{name}.txt").readline().startswith("Text:  ")
        for path in (f"{out}/main/{name}.mp4", f"{out}/audio/{name}.wav", f"{out}/bbx/{name}.npy", f"{out}/gt/{name}.npz"):
            assert os.path.isfile(path), path
    assert open(f"{out}/main/s1/bbaf2n.txt").readline().strip() == "Text:  BIN BLUE AT F TWO NOW"
    truth = np.load(f"{out}/gt/s1/bbaf2n.npz")
    assert list(truth["words"]) == "BIN BLUE AT F TWO NOW".split()
    assert truth["word_start_s"][0] == pytest.approx(23750 / 25000) and truth["word_end_s"][-1] == pytest.approx(53000 / 25000)
    # every list holds its sentences' part, and one sentence (two speakers) sits in one part
    for part in ("train", "valid", "test"):
        for name in open(f"{out}/{part}.txt").read().split():
            assert grid.split_of(open(f"{out}/main/{name}.txt").readline().split()[1:]) == part
    assert sum("bbaf2n" in open(f"{out}/{p}.txt").read() for p in ("train", "valid", "test")) == 1
    assert not temporaries(out)


def test_every_bad_input_is_one_line_naming_its_file(prepared):
    root, out, result = prepared
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr

    def line_about(fragment):
        found = [line for line in lines if fragment in line]
        assert found, (fragment, result.stderr)
        return found[0]
    assert "has no alignment" in line_about("noalig") and "add GRID's alignment" in line_about("noalig")
    assert "has no video" in line_about("novide.align")
    assert "runs to 3.96 s, past the 3.00 s" in line_about("toolng")
    assert "'banana' is not a word of GRID's grammar" in line_about("banana")
    assert f"{root}/s5" in line_about("holds no video")
    failures = open(f"{out}/failures_grid.txt").read()
    for ident in ("noalig", "novide", "toolng", "banana"):
        assert f"s1/{ident}\t" in failures
        assert not glob.glob(f"{out}/*/s1/{ident}.*")      # nothing written for a clip left out
    # a rerun resumes: only the clip whose length is known from its video alone is decoded again
    again = run_module("preparation.grid", "--grid_root", root, "--out_dir", out, "--no_progress", "--nshard", 1,
                       timeout=300)
    assert again.returncode == 3 and f"framing 1 clips ({len(GOOD) + 2} already done)" in again.stderr, again.stderr
    assert sorted(open(f"{out}/filelist.txt").read().split()) == sorted(open(f"{out}/prepared.txt").read().split())


def test_a_folder_without_any_clip_is_refused_in_one_line(tmp_path):
    os.makedirs(tmp_path / "g" / "s1")
    os.makedirs(tmp_path / "g" / "alignments" / "s1")
    result = run_module("preparation.grid", "--grid_root", tmp_path / "g", "--out_dir", tmp_path / "o")
    assert result.returncode == 2 and "no clip of" in result.stderr and "Traceback" not in result.stderr
    result = run_module("preparation.grid", "--grid_root", tmp_path / "nothing", "--out_dir", tmp_path / "o")
    assert result.returncode == 2 and "does not exist" in result.stderr.splitlines()[-1]


def test_the_damaged_mpg_is_read_and_framed_like_the_others(prepared):
    _, out, _ = prepared
    from utils.video import VideoReader
    with VideoReader(f"{out}/main/s1/{DAMAGED}.mp4") as reader:
        frames = list(reader)
    assert len(frames) == 75 and frames[0].shape == (160, 160, 3)
    boxes = np.load(f"{out}/bbx/s1/{DAMAGED}.npy")
    assert len(boxes) == 75


def test_the_copy_puts_the_mouth_at_the_frame_centre(prepared):
    """The framing's promise, read from pixels: the mouth (the darkest band of the lower face) lies within a few
    pixels of the frame centre row, and the face box the detector finds in the copy spans most of the frame."""
    _, out, _ = prepared
    from utils.video import VideoReader
    for ident in GOOD:
        with VideoReader(f"{out}/main/s1/{ident}.mp4") as reader:
            frame = list(reader)[0]
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
        rows = grey[60:110, 65:95].mean(1)                  # a column through the lips, nose tip to chin
        assert abs(60 + int(np.argmin(rows)) - 80) <= 8, (ident, np.argmin(rows))
        box = np.load(f"{out}/bbx/s1/{ident}.npy")[0]
        assert 90 <= box[2] - box[0] <= 150 and box[0] < 80 < box[2], box


def test_a_track_that_wanders_is_refused_as_a_damaged_picture():
    steady = np.tile([100, 100, 200, 220], (75, 1))
    grid.check_face_steady("clip.mpg", steady)
    wandering = steady.copy()
    wandering[:30] = [0, 230, 40, 288]
    with pytest.raises(Exception, match="stays in place on only 45 of its 75 frames"):
        grid.check_face_steady("clip.mpg", wandering)


def test_frame_word_ids_follow_the_alignment():
    ids = grid.frame_word_ids(["BIN", "BLUE"], [0.04, 0.12], [0.12, 0.2], 6)
    assert ids.tolist() == [0, 1 + grid.VOCABULARY.index("BIN"), 1 + grid.VOCABULARY.index("BIN"),
                            1 + grid.VOCABULARY.index("BLUE"), 1 + grid.VOCABULARY.index("BLUE"), 0]


def test_mouth_sync_tells_a_real_clip_from_another_sentence(prepared, tmp_path):
    """The measure first checked on real ground truth: a real clip against its degraded copy reads r >= 0.8,
    against every other sentence's real clip r <= 0.2 on average (the high-pass keeps the envelope every GRID
    sentence shares out of it)."""
    _, out, _ = prepared
    from bench.real_measures import degraded_copy
    from evaluation import mouth_sync
    from evaluation.common import ClipRun
    names = [f"s1/{i}" for i in GOOD + (DAMAGED,)]
    for name in names:
        degraded_copy(f"{out}/main/{name}.mp4", f"{tmp_path}/degraded/{name}.mp4")
    opts = mouth_sync.MouthSyncOptions(video_root=f"{tmp_path}/degraded", gt_root=f"{out}/gt", real_root=f"{out}/main")
    own = mouth_sync.evaluate(opts, ClipRun(progress=False), names)
    assert own["r_mean"] >= 0.8 and min(row["r"] for row in own["per_clip"]) > 0.6, own["r_mean"]
    others = []
    for a in names:
        for b in names:
            if a != b:
                truth = mouth_sync.load_ground_truth(f"{out}/gt/{b}.npz", real=True)
                others.append(mouth_sync.real_clip_mouth_sync(f"{out}/main/{a}.mp4", f"{out}/main/{b}.mp4", truth)["r"])
    assert np.mean(others) <= 0.2, np.mean(others)
    # the same with the CLI, and a synthetic corpus' measure refuses a real clip's gt in one line
    result = run_module("evaluation.mouth_sync", "--video_root", f"{tmp_path}/degraded", "--gt_root", f"{out}/gt",
                        "--filelist", f"{out}/filelist.txt", "--no_progress")
    assert result.returncode == 2 and "lacks mouth_opening" in result.stderr and "--real_root" in result.stderr


SYNCNET = os.path.join(ROOT, "weights", "grid_s1_syncnet.pt")


def test_the_grid_syncnet_finds_real_clips_in_sync(prepared):
    """LSE on real video: the SyncNet trained on s1's train split (weights/grid_s1_syncnet.pt) puts the best offset of
    real clips at 0 (+/- 1 frame) and reads their own speech with at least twice the confidence of another's."""
    _, out, _ = prepared
    from evaluation.sync_eval import clip_sync, load_syncnet
    syncnet = load_syncnet(SYNCNET)
    names = [f"s1/{i}" for i in GOOD + (DAMAGED,)]
    own = [clip_sync(f"{out}/main/{n}.mp4", syncnet, 15, 20) for n in names]
    other = [clip_sync(f"{out}/main/{n}.mp4", syncnet, 15, 20, audio_path=f"{out}/main/{names[i - 1]}.mp4")
             for i, n in enumerate(names)]
    assert sum(abs(r["offset"]) <= 1 for r in own) >= len(names) - 1, [r["offset"] for r in own]
    assert np.mean([r["lse_c"] for r in own]) >= 2 * np.mean([r["lse_c"] for r in other])


@pytest.mark.parametrize("reader", ["grid_s1_expert.pt", "grid_s1_observer.pt", "grid_s1_expert_2.pt", "grid_s1_expert_3.pt"])
def test_the_grid_readers_read_held_out_real_clips_better_than_blanked(prepared, reader):
    """The shipped readers of real mouths (docs/real_data.md) on s1 test sentences: greedy decoding of the copies'
    mouths reads far better than the same reader with the video blanked (the grammar's prior alone)."""
    import torch
    from models.avhubert import load_lip_reader
    from models.avhubert.reading import decode_clip, mouth_rois
    from utils.corpus import read_transcript
    from utils.wer import error_rates
    _, out, _ = prepared
    model = load_lip_reader(os.path.join(ROOT, "weights", reader), "a reader")
    refs, read, blank = [], [], []
    for ident in HELD_OUT:
        rois = mouth_rois(f"{out}/main/s1/{ident}.mp4")
        refs.append(read_transcript(f"{out}/main", f"s1/{ident}"))
        read.append(decode_clip(model, rois, beam=1))
        blank.append(decode_clip(model, torch.zeros_like(rois), beam=1))
    wer, wer_blank = error_rates(refs, read)["wer"], error_rates(refs, blank)["wer"]
    assert wer <= 0.25 and wer_blank >= 0.6, (reader, wer, wer_blank, read)
    if reader.startswith("grid_s1_expert_"):        # a member of the lip-loss ensemble: it stands behind the expert
        from models.avhubert.ensemble import ExpertEnsemble
        lead = load_lip_reader(os.path.join(ROOT, "weights", "grid_s1_expert.pt"), "the expert")
        assert ExpertEnsemble([lead, model], ["grid_s1_expert.pt", reader]).codec is lead.codec


def test_the_real_main_job_runs_every_stage_on_grid(prepared, tmp_path):
    """bench/grid_experiment.sh (quickstart.sh --grid_root) at a few steps on the prepared clips: every stage runs
    (preparation resumes, the shipped readers, TalkLip's three stages, synthesis before and after, a real 360 x 288
    clip dubbed) and the summary holds the run's own numbers: each metric is the one its measure wrote, the real
    held-out videos read far better than an untrained generator's mouths, and each target is judged from them."""
    import json
    from utils.video import VideoReader
    root, out, _ = prepared
    run = tmp_path / "run"
    proc = subprocess.run(["bash", os.path.join(ROOT, "bench", "grid_experiment.sh"), "--grid_root", root, "--out_dir", str(run),
                           "--precision", "fp32", "--data_dir", out, "--stage_steps", "1,1,1", "--ckpt_interval", "1",
                           "--train_clips", "3", "--test_clips", "2"],
                          capture_output=True, text=True, timeout=900, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(run / "summary.json"))
    m = summary["metrics"]
    assert set(m) == {"ground_truth", "before", "after"} and m["after"]["clips"] == 2
    assert summary["training"]["stage_reached"] == 3 and summary["training"]["steps"] == 3
    for tag in ("before", "after"):
        assert m[tag]["psnr"] == json.load(open(run / f"quality_{tag}.json"))["psnr"]
        assert m[tag]["mouth_sync"] == json.load(open(run / f"mouth_sync_{tag}.json"))["r_mean"]
    assert m["ground_truth"]["lse_c"] == json.load(open(run / "lse_ground_truth.json"))["lse_c"]
    assert m["ground_truth"]["observer_wer"] <= 0.34 and m["before"]["observer_wer"] >= 0.5   # real vs random mouths
    t = summary["targets"]
    assert t["psnr >= 29 dB"] == {"value": round(m["after"]["psnr"], 4), "bound": 29.0, "met": m["after"]["psnr"] >= 29}
    assert t["ssim >= 0.90"]["met"] is False                           # three steps make no face
    dub = summary["dubbed"]
    assert (dub["face_clip"], dub["speech_clip"]) == tuple(open(run / "lists" / "test.txt").read().split()[:2])
    with VideoReader(str(run / "dubbed.mp4")) as reader:
        assert (reader.width, reader.height) == (360, 288)             # GRID's own video, dubbed at its size
    for picture in ("samples.png", "mouth_sync.png", "observer_wer.png"):
        assert cv2.imread(str(run / picture)) is not None, picture
    with VideoReader(str(run / "dub" / "dub_strip.mp4")) as reader:
        assert reader.width > 2 * 360
    assert "the real main job (GRID s1, CC BY 4.0)" in proc.stdout and "targets:" in proc.stdout
    import torch                       # the generator carries the copies' face framing, and the dub used it
    framing = json.load(open(os.path.join(out, "bbx", "face_framing.json")))
    last = sorted(glob.glob(str(run / "train" / "checkpoint_step*.pth")))[-1]
    assert torch.load(last, map_location="cpu", weights_only=True)["face_framing"] == \
        {"framing": framing["framing"], "detector": framing["detector"]}
    # quickstart.sh --grid_root is this job (its own options only)
    proc = subprocess.run(["bash", os.path.join(ROOT, "quickstart.sh"), "--grid_root", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--grid_root must be a GRID folder" in proc.stderr


def test_the_copies_face_framing_maps_the_source_videos_boxes_onto_the_copies_boxes(prepared):
    """preparation.grid records how the copies' boxes (what TalkLip trains on) crop the face that the same detector
    boxes in GRID's own video: mapped by it, each frame's source box lands on the copy's box, which the source box
    as found misses (the copy's face fills its frame, and its top edge cuts the box)."""
    import json
    from face_detection.framing import frame_box
    from preparation.grid import FRAME_SIZE
    _, out, _ = prepared
    recorded = json.load(open(os.path.join(out, "bbx", "face_framing.json")))
    assert recorded["detector"] == "opencv-haar-cascade" and recorded["frames"] >= 300
    def iou(a, b):
        w = max(0, min(a[2], b[2]) - max(a[0], b[0])); h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
        return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)
    framed, as_found = [], []
    for name in open(os.path.join(out, "filelist.txt")).read().split():
        source_boxes = np.load(os.path.join(out, "gt", f"{name}.npz"))["face_box"]
        for source_box, copy_box in zip(source_boxes, np.load(os.path.join(out, "bbx", f"{name}.npy"))):
            framed.append(iou(np.clip(frame_box(source_box, recorded["framing"]), 0, FRAME_SIZE), copy_box))
            as_found.append(iou(np.clip(source_box, 0, FRAME_SIZE), copy_box))
    assert np.median(framed) > 0.9 and np.percentile(framed, 10) > 0.8 and np.median(as_found) < 0.8


def test_a_dub_that_is_not_of_the_clips_source_is_one_line_and_writes_nothing(prepared, tmp_path):
    """evaluation.grid_dub reads a dub of a GRID clip's own video: a dub of another size (here the 160-px copy), a
    clip that was never prepared, or a folder that is not preparation.grid's, is one line naming the file and
    what to do, and leaves no framed copy or strip behind."""
    _, out, _ = prepared
    cases = [("--dub", f"{out}/main/s1/bbiz1s.mp4", "--face", "s1/bbiz1s", "dub the source video itself"),
             ("--dub", f"{out}/main/s1/bbiz1s.mp4", "--face", "s1/nosuch", "s1/nosuch.npz does not exist")]
    for flag, dub, face_flag, face, says in cases:
        proc = run_module("evaluation.grid_dub", flag, dub, "--data_root", out, face_flag, face, "--speech",
                          "s1/bgbn8n", "--out_dir", tmp_path / "dub")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], proc.stderr
        assert not os.path.exists(tmp_path / "dub") or not [f for _, _, fs in os.walk(tmp_path / "dub") for f in fs]
    other = tmp_path / "other"                                     # a gt with positions but no framing windows
    os.makedirs(other / "gt" / "s1")
    for name in ("a", "b"):
        np.savez(other / "gt" / "s1" / f"{name}.npz", face_box=np.zeros((3, 4)), mouth_center=np.zeros((3, 2)))
    proc = run_module("evaluation.grid_dub", "--dub", f"{out}/main/s1/bbiz1s.mp4", "--data_root", other, "--face",
                      "s1/a", "--speech", "s1/b", "--out_dir", tmp_path / "dub")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "not a prepared GRID clip's gt" in lines[0], proc.stderr
    assert not os.path.exists(tmp_path / "dub")


def test_the_dub_bench_scores_each_pair_against_its_driving_sentence(prepared, talklip_checkpoint):
    """bench.grid_dubs dubs test sentence 2i's own video with 2i+1's speech (or its own) through inf_demo.py and
    reads each as the job reads its dub. Driven by its own speech the two truths it holds are one clip's mouth: its
    baseline is 1 and the dub's r with the face's own mouth is its sync."""
    import json
    from utils.fileio import read_filelist
    _, out, _ = prepared
    ckpt, _ = talklip_checkpoint
    names = read_filelist(os.path.join(out, "test.txt"))
    from bench.grid_dubs import dub_pairs
    assert dub_pairs(names, 10, "next") == [(names[2 * i], names[2 * i + 1]) for i in range(len(names) // 2)][:10]
    assert dub_pairs(names, 1, "own") == [(names[0], names[0])]
    proc = run_module("bench.grid_dubs", "--data_root", out, "--ckpt_path", ckpt, "--pairs", 1, "--driving", "own")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["pairs"] == 1 and "CC BY 4.0" in result["data"]
    row = result["per_pair"][0]
    assert row["face"] == row["speech"] == names[0]
    assert row["words"] == len(open(os.path.join(out, "main", row["speech"] + ".txt")).read().split("Text:")[1].split())
    assert result["wer"] == row["wer"] and -1 <= row["sync_r"] <= 1
    assert row["baseline_r"] == pytest.approx(1.0, abs=1e-6)
    assert row["leak_r"] == pytest.approx(row["sync_r"], abs=1e-6)
    proc = run_module("bench.grid_dubs", "--data_root", os.path.join(out, "main"), "--ckpt_path", ckpt)
    assert proc.returncode != 0 and "test.txt is missing" in proc.stderr.strip().splitlines()[-1]
