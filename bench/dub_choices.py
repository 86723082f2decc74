"""What --paste and --reference do to a dub's lip sync and to leakage, on a quickstart run's corpus.

    python -m bench.dub_choices --run_dir runs/quickstart [--pairs 10] [--choices mouth/own face/own mouth/first ...]

Each of the first ``--pairs`` test clips (the face) is dubbed with the next test clip's speech, by the
run's trained generator, once per choice (paste/reference). Per choice, the mean over pairs of:
- ``sync_r``: mouth sync (``evaluation.mouth_sync.dub_mouth_sync``) against the driving speech's true
  opening;
- ``leak_r``: the dubbed mouth's r with the face clip's own true opening (the old speech leaking in),
  against ``baseline_r``, the r between the two clips' true openings (what leak_r reads with no leak).
Prints one JSON line.
"""
import argparse
import glob
import json
import os
import tempfile

import numpy as np

from dubbing import SynthesisOptions, dub
from evaluation.mouth_sync import darkness_series, dub_mouth_sync, load_ground_truth, pearson
from face_detection import build_detector
from models.talklip import load_talklip, prepare_for_inference
from utils.cli import positive_int
from utils.fileio import read_filelist
from utils.timeline import ping_pong
from utils.video import probe_video


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True, help="a quickstart run (corpus/, lists/, train/)")
    parser.add_argument("--ckpt_path", default=None, help="the generator (default: the run's last checkpoint)")
    parser.add_argument("--pairs", type=positive_int, default=10)
    parser.add_argument("--choices", nargs="+", default=["mouth/own", "face/own", "mouth/first", "mouth/closed"],
                        help="paste/reference pairs to dub with")
    args = parser.parse_args(argv)
    corpus = os.path.join(args.run_dir, "corpus")
    names = read_filelist(os.path.join(args.run_dir, "lists", "test.txt"))[:args.pairs + 1]
    ckpt = args.ckpt_path or sorted(glob.glob(os.path.join(args.run_dir, "train", "checkpoint_step*.pth")))[-1]
    generator = prepare_for_inference(load_talklip(ckpt, "cpu"))
    detector = build_detector(None, "cpu", log=lambda *_: None)
    result = {"generator": ckpt, "pairs": len(names) - 1, "choices": {}}
    baseline = []
    with tempfile.TemporaryDirectory(prefix="talklip_choices_") as work:
        for choice in args.choices:
            paste, reference = choice.split("/")
            sync, leak = [], []
            for face, voice in zip(names[:-1], names[1:]):
                out = os.path.join(work, f"{paste}_{reference}_{os.path.basename(face)}.mp4")
                dub(generator, f"{corpus}/main/{face}.mp4", f"{corpus}/audio/{voice}.wav", out, detector,
                    SynthesisOptions(progress=False, paste=paste, reference=reference))
                face_gt, voice_gt = (load_ground_truth(f"{corpus}/gt/{n}.npz") for n in (face, voice))
                scored = dub_mouth_sync(out, face_gt, voice_gt)
                sync.append(scored["r"])
                shown = ping_pong(probe_video(out).num_frames, len(face_gt["mouth_opening"]))[:scored["frames"]]
                leak.append(pearson(darkness_series(out, face_gt, shown), face_gt["mouth_opening"][shown]))
                if choice == args.choices[0]:
                    baseline.append(pearson(face_gt["mouth_opening"][shown], np.asarray(scored["opening"])))
            result["choices"][choice] = {"sync_r": round(float(np.mean(sync)), 3),
                                         "sync_r_min": round(float(np.min(sync)), 3),
                                         "leak_r": round(float(np.mean(leak)), 3)}
    result["baseline_r"] = round(float(np.mean(baseline)), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
