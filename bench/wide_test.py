"""A sweep's arms read on a wider test set: the observer's WER over N held-out clips instead of the quickstart's 20.

    python -m bench.wide_test --test_dir runs/wide_j2 --av_jitter 2 --sweep runs/sweepc [--seeds 0 1 2] [--clips 100]
    python -m bench.wide_test --test_dir runs/wide_j2 --av_jitter 2 --lip_runs 'runs/long2_600/seed{seed}/lip' \
        --ablation_runs 'runs/long2_600/seed{seed}/abl'

The quickstart scores the observer on 20 test clips of 5 words: 100 words, so a run's WER carries a
sampling error of ~0.05 at WER 0.3 on its own, part of the seed spread `bench/lip_loss_sweep.py` measures.
This scores the same generators on ``--clips`` test clips of another corpus (`make_synthetic --seed
--corpus_seed`, ``--av_jitter`` as the sweep's corpus, so the clips come from the same distribution; their
sentences are the grammar's held-out fifth, which no reader and no generator trained on). The test corpus is
made once in ``--test_dir`` and reused; each generator's reading is kept there (``scores/``), so a rerun only
prints. Each arm's generator is the last ``checkpoint_step*.pth`` of its training folder (``--sweep DIR``:
DIR/seed<S>/train and DIR/seed<S>/train_ablation, as quickstart.sh --ablation writes them). Prints the
same markdown table and JSON line as lip_loss_sweep (effect, twice the larger arm's seed std, paired effect).
"""
import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys

from bench.lip_loss_sweep import ARMS, effect_of_lip_loss
from preparation.make_synthetic import MOUTH_SCALES, SPEECH_SNRS_DB
from training.checkpoints import PATTERNS
from utils.cli import number_in_range

GENERATOR_PATTERN = PATTERNS[0]     # train.py's generator files, checkpoint_step<9 digits>.pth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_OBSERVER = os.path.join(ROOT, "weights", "grid_observer.pt")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--test_dir", required=True, help="the wider test set's folder (made on first use)")
    p.add_argument("--av_jitter", type=int, default=0, help="the test corpus' --av_jitter_frames (the sweep's)")
    p.add_argument("--clips", type=int, default=100, help="test clips (the corpus is made with 5x as many clips)")
    p.add_argument("--corpus_seed", type=int, default=9000, help="the test corpus' seed (not a training corpus')")
    p.add_argument("--mouth_scale", type=number_in_range(*MOUTH_SCALES), default=None,
                   help="the test corpus' --mouth_scale (the sweep's; default: make_synthetic's)")
    p.add_argument("--speech_snr", type=number_in_range(*SPEECH_SNRS_DB), default=None,
                   help="the test corpus' --speech_snr_db (the sweep's quickstart --speech_snr; default: no noise)")
    p.add_argument("--observer", default=SHIPPED_OBSERVER,
                   help="the observer that reads (the shipped one; a --train_readers run's observer.pt for a corpus "
                        "the shipped readers do not read, e.g. --mouth_scale 1.0)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sweep", default=None, help="a lip_loss_sweep --out_dir: its seeds' train and train_ablation")
    p.add_argument("--lip_runs", default=None, help="training folder of the lip-loss arm, {seed} in it")
    p.add_argument("--ablation_runs", default=None, help="training folder of the ablation, {seed} in it")
    args = p.parse_args(argv)
    if args.sweep:
        args.lip_runs = args.lip_runs or os.path.join(args.sweep, "seed{seed}", "train")
        args.ablation_runs = args.ablation_runs or os.path.join(args.sweep, "seed{seed}", "train_ablation")
    if not (args.lip_runs and args.ablation_runs):
        p.error("give --sweep, or both --lip_runs and --ablation_runs")
    return args


def run(cmd, log):
    """``cmd`` (a script or ``-m module`` and its arguments, or ``bash`` and a script) with this Python,
    its output appended to ``log``."""
    argv = cmd if cmd[0] == "bash" else [sys.executable, *cmd]
    with open(log, "a") as handle:
        subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, check=True,
                       env=dict(os.environ, PYTHONPATH=ROOT, PYTHON=sys.executable))


def make_test_set(test_dir: str, av_jitter: int, clips: int, corpus_seed: int, mouth_scale=None,
                  speech_snr=None) -> str:
    """The corpus, its first ``clips`` test clips listed and preprocessed (boxes, 16 kHz speech). A folder made
    with other settings is refused (its ``ready`` file keeps them; an empty one is from before they were kept)."""
    corpus, lists = os.path.join(test_dir, "corpus"), os.path.join(test_dir, "lists")
    listed = os.path.join(lists, "test.txt")
    settings = {"av_jitter": av_jitter, "clips": clips, "corpus_seed": corpus_seed, "mouth_scale": mouth_scale}
    if speech_snr is not None:       # kept only when set: the folders made before it stay valid
        settings["speech_snr_db"] = speech_snr
    ready = os.path.join(test_dir, "ready")
    if os.path.isfile(ready):
        with open(ready) as handle:
            text = handle.read().strip()
        if text and json.loads(text) != settings:
            raise SystemExit(f"error: {test_dir} holds a test set made with {text}, not {json.dumps(settings)}: "
                             f"give another --test_dir")
        return listed
    os.makedirs(lists, exist_ok=True)
    log = os.path.join(test_dir, "make.log")
    if not os.path.isfile(os.path.join(corpus, "test.txt")):
        options = [] if mouth_scale is None else ["--mouth_scale", str(mouth_scale)]
        options += [] if speech_snr is None else ["--speech_snr_db", str(speech_snr)]
        run(["-m", "preparation.make_synthetic", "--out_dir", corpus, "--num_clips", str(5 * clips),
             "--seed", str(corpus_seed), "--grammar", "grid", "--av_jitter_frames", str(av_jitter), *options], log)
    with open(os.path.join(corpus, "test.txt")) as handle:
        names = [line.strip() for line in handle if line.strip()][:clips]
    with open(listed, "w") as handle:
        handle.writelines(f"{n}\n" for n in names)
    run(["bash", os.path.join(ROOT, "preprocess.sh"), "--filelist", listed, "--video_root", os.path.join(corpus, "main"),
         "--audio_root", os.path.join(corpus, "audio"), "--bbx_root", os.path.join(corpus, "bbx"), "--nshard", "2"], log)
    with open(ready, "w") as handle:
        json.dump(settings, handle)
    return listed


def last_checkpoint(folder: str) -> str:
    found = sorted(glob.glob(os.path.join(folder, GENERATOR_PATTERN)))
    if not found:
        raise SystemExit(f"error: no {GENERATOR_PATTERN} in {folder}: give the arm's training folder")
    return found[-1]


def observer_wer(test_dir: str, listed: str, ckpt: str, observer: str) -> float:
    """The observer's corpus-level WER on the generator's synthesis of the test clips (cached per checkpoint
    and observer)."""
    corpus = os.path.join(test_dir, "corpus")
    stat = os.stat(ckpt)      # a checkpoint rewritten at the same path is read again
    key = f"{os.path.realpath(ckpt)} {stat.st_size} {stat.st_mtime_ns}"
    if os.path.realpath(observer) != os.path.realpath(SHIPPED_OBSERVER):
        key += f" {os.path.realpath(observer)}"     # the shipped observer's readings keep their old keys
    key = hashlib.sha1(key.encode()).hexdigest()[:12]
    scores = os.path.join(test_dir, "scores")
    out_json = os.path.join(scores, f"{key}.json")
    if not os.path.isfile(out_json):
        os.makedirs(scores, exist_ok=True)
        synt, log = os.path.join(test_dir, "synt", key), os.path.join(scores, f"{key}.log")
        with open(log, "w") as handle:
            handle.write(f"{os.path.realpath(ckpt)}\n")
        run(["inf_test.py", "--filelist", listed, "--video_root", os.path.join(corpus, "main"), "--audio_root",
             os.path.join(corpus, "audio"), "--bbx_root", os.path.join(corpus, "bbx"), "--save_root", synt,
             "--ckpt_path", ckpt, "--device", "cpu", "--no_progress"], log)
        run(["-m", "evaluation.avhubert_wer", "--video_root", synt, "--ckpt_path",
             observer, "--word_root", os.path.join(corpus, "main"),
             "--roi", "center", "--beam", "1", "--filelist", listed, "--out_json", out_json, "--no_progress"], log)
    with open(out_json) as handle:
        return float(json.load(handle)["wer"])


def main(args) -> int:
    listed = make_test_set(args.test_dir, args.av_jitter, args.clips, args.corpus_seed, args.mouth_scale,
                           args.speech_snr)
    with open(listed) as handle:
        clips = sum(1 for line in handle if line.strip())
    folders = {"after": args.lip_runs, "ablation": args.ablation_runs}
    ckpts = {arm: [last_checkpoint(folders[arm].format(seed=s)) for s in args.seeds] for arm in ARMS}
    wer = {arm: [observer_wer(args.test_dir, listed, c, args.observer) for c in ckpts[arm]] for arm in ARMS}
    verdict = effect_of_lip_loss(wer)
    stats, paired = verdict["spread"], verdict["paired_effect"]
    print(f"| seed | observer WER over {clips} clips, lip loss | no lip loss | no lip loss - lip loss |")
    print("| --- | --- | --- | --- |")
    for k, s in enumerate(args.seeds):
        print(f"| {s} | {wer['after'][k]:.3f} | {wer['ablation'][k]:.3f} | {paired['per_seed'][k]:+.3f} |")
    print(f"| mean +- std | {stats['after']['mean']:.3f} +- {stats['after']['std']:.3f} | "
          f"{stats['ablation']['mean']:.3f} +- {stats['ablation']['std']:.3f} | "
          f"{paired['mean']:+.3f} +- {paired['std']:.3f} |")
    print(json.dumps({"seeds": args.seeds, "clips": clips, "checkpoints": ckpts, "observer_wer": wer, **verdict}))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
