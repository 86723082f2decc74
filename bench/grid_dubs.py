"""The real main job's dub over many pairs: GRID's own 360 x 288 videos dubbed and read as the job reads its one.

    python -m bench.grid_dubs --data_root runs/grid/data --ckpt_path runs/grid/train/checkpoint_step000002000.pth
                              [--pairs 10] [--driving next|own] [--paste mouth|face] [--reference own|first|closed]

The main job dubs one held-out sentence with another's speech, and six words make its WER coarse (one word is
0.167). Here test sentence 2i's source video (the face) is dubbed with sentence 2i+1's speech (``--driving next``,
as the job), or with its own (``--driving own``: the dub's path on the very clip and speech the test split
synthesizes from the prepared copy, so the two paths can be compared), for the first ``--pairs`` pairs, each
framed as a copy (``evaluation.grid_dub``) and scored per pair:
- ``wer``: the observer's WER against the driving sentence's words (weighted by words over the pairs);
- ``sync_r``: mouth sync against the driving sentence's real video (high-passed, as the job scores it);
- ``leak_r``: the dub's mouth against the face clip's own real mouth at the frames the dub shows (the source
  sentence leaking through the upper face or the reference), beside ``baseline_r``, the two real clips' r over
  the same frames (what ``leak_r`` reads with no leak: sentences of one grammar share their rhythm).
Prints one JSON line. GRID: Cooke et al. 2006, CC BY 4.0.
"""
import argparse
import json
import os
import tempfile

import numpy as np

import inf_demo
from evaluation.avhubert_wer import LipReadingOptions, load_observer, metric
from evaluation.grid_dub import clip_source, frame_dub
from evaluation.mouth_sync import darkness_series, high_pass, load_ground_truth, pearson
from utils.cli import positive_int
from utils.errors import TalkLipError, run_cli
from utils.fileio import read_filelist
from utils.timeline import ping_pong

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBSERVER = os.path.join(ROOT, "weights", "grid_s1_observer.pt")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", required=True, help="a folder preparation.grid wrote (test.txt, gt/, main/, audio/)")
    parser.add_argument("--ckpt_path", required=True, help="the generator (a TalkLip checkpoint)")
    parser.add_argument("--observer", default=OBSERVER, help="the lip reader that scores (default: GRID s1's observer)")
    parser.add_argument("--pairs", type=positive_int, default=10, help="pairs of test sentences to dub")
    parser.add_argument("--driving", choices=["next", "own"], default="next",
                        help="the speech: the next test sentence's (as the main job) or the face clip's own")
    parser.add_argument("--paste", choices=["mouth", "face"], default="mouth", help="inf_demo.py's --paste")
    parser.add_argument("--reference", default="own", help="inf_demo.py's --reference (own, first, closed)")
    return parser.parse_args(argv)


def dub_pairs(names, count: int, driving: str):
    """(face, speech) of the first ``count`` pairs: sentence 2i's face with 2i+1's speech, or with its own."""
    return [(names[2 * i], names[2 * i + (1 if driving == "next" else 0)]) for i in range(min(count, len(names) // 2))]


def score_pair(face: str, speech: str, data_root: str, dubbed: str, work: str, read) -> dict:
    framed = frame_dub(dubbed, data_root, face, speech, work)
    face_gt = load_ground_truth(os.path.join(data_root, "gt", f"{face}.npz"), real=True)
    own = darkness_series(os.path.join(data_root, "main", f"{face}.mp4"), face_gt,
                          np.arange(len(face_gt["face_box"])), exact=True)
    shown = ping_pong(framed["frames"], len(face_gt["face_box"]))[:framed["frames"]]
    own = high_pass(np.asarray(own, np.float64)[shown])
    read_out = read(speech)
    return {"face": face, "speech": speech, "wer": read_out["wer"], "words": read_out["words"], "hyp": read_out["hyp"],
            "sync_r": framed["r"], "leak_r": pearson(np.asarray(framed["darkness"]), own),
            "baseline_r": pearson(np.asarray(framed["opening"]), own)}


def main(args) -> int:
    test_list = os.path.join(args.data_root, "test.txt")
    if not os.path.isfile(test_list):
        raise TalkLipError(f"{test_list} is missing: --data_root must be a folder python -m preparation.grid wrote")
    pairs = dub_pairs(read_filelist(test_list), args.pairs, args.driving)
    observer = load_observer(LipReadingOptions(video_root="", ckpt_path=args.observer, word_root=""))
    rows = []
    with tempfile.TemporaryDirectory(prefix="talklip_grid_dubs_") as work:
        for k, (face, speech) in enumerate(pairs):
            _, source = clip_source(args.data_root, face)
            pair_dir = os.path.join(work, str(k))
            dubbed = os.path.join(pair_dir, "dub.mp4")
            os.makedirs(pair_dir)
            status = inf_demo.main(inf_demo.parse_args([   # the job's dub, flag for flag (bench/grid_experiment.sh)
                "--video_path", source, "--wav_path", os.path.join(args.data_root, "audio", f"{speech}.wav"),
                "--ckpt_path", args.ckpt_path, "--save_path", dubbed, "--device", "cpu", "--no_progress",
                "--paste", args.paste, "--reference", args.reference]))
            if status:
                raise TalkLipError(f"inf_demo.py failed on {source}")
            read = metric(LipReadingOptions(video_root=os.path.join(pair_dir, "framed"), ckpt_path=args.observer,
                                            word_root=os.path.join(args.data_root, "main"), roi="center", beam=1),
                          observer)
            rows.append(score_pair(face, speech, args.data_root, dubbed, pair_dir, read))
    words = sum(r["words"] for r in rows)
    mean = lambda key: round(float(np.mean([r[key] for r in rows])), 3)
    print(json.dumps({"bench": "grid_dubs", "data": "GRID s1 (Cooke et al. 2006, CC BY 4.0)", "generator": args.ckpt_path,
                      "driving": args.driving, "paste": args.paste, "reference": args.reference, "pairs": len(rows),
                      "wer": round(sum(r["wer"] * r["words"] for r in rows) / max(words, 1), 3),
                      "sync_r": mean("sync_r"), "leak_r": mean("leak_r"), "baseline_r": mean("baseline_r"),
                      "per_pair": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                                   for r in rows]}))
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
