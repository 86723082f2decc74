"""Does the lip loss help, beyond the seed spread? The main job with and without it, over several seeds.

    python -m bench.lip_loss_sweep --out_dir runs/sweep [--seeds 0 1 2] [-- EXPERIMENT FLAGS ...]

Each seed runs `bench/experiment.sh --seed S --ablation` (the main job with its research options: its own corpus, the lip-loss run and the ablation
branched where stage 2 begins) with the flags after `--` (e.g. `--stage_steps 150,75,150 --lip_w 1e-4
--lip_augment 4`; `--corpus_seed 0`: every seed trains on the corpus of seed 0, so the seeds differ in
training alone); a seed whose summary.json exists is read, not run again. Prints a markdown table
(per seed and mean +- std: the observer's WER after training with the lip loss and without, mouth sync,
PSNR) and one JSON line with the effect (ablation - lip loss, in observer WER) and whether it exceeds
twice the larger of the two arms' seed standard deviations (the issue's bar), beside the paired effect
(each seed's own difference: the arms share the seed's corpus and stages 0-1, so the corpus' difficulty,
which moves both arms together, cancels in it).

`--stage2_from DIR`: another sweep's folder whose seeds ran the same corpus and stages 0-1 (the same flags
but for stage 2's: its length, the lip loss's settings); each seed's runs branch from DIR/seed<S>'s state
where stage 2 begins (`bench/experiment.sh --stage2_from DIR/seed<S>`) instead of training stages 0-1 again.
`--start_seed T` with it: every seed branches from DIR/seed<T>'s state (one generator where stage 2 begins),
so the seeds differ in stage 2 alone (its data order, crops and noise) and the arms' seed spread is stage 2's.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = ("after", "ablation")


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out_dir", required=True, help="one run of the main job per seed goes to <out_dir>/seed<S>")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the seeds (at least 3 to claim an effect)")
    p.add_argument("--stage2_from", default=None,
                   help="another sweep's --out_dir with the same corpus and stages 0-1: train stage 2 only, from "
                        "each seed's state where stage 2 begins there")
    p.add_argument("--start_seed", type=int, default=None,
                   help="with --stage2_from: every seed branches from <stage2_from>/seed<T>'s state, not its own")
    args = p.parse_args(argv)
    if args.start_seed is not None and not args.stage2_from:
        p.error("--start_seed needs --stage2_from (the sweep whose seed<T> holds the state where stage 2 begins)")
    args.experiment_flags = passthrough
    return args


def experiment_command(run_dir: str, seed: int, flags, stage2_from=None, start_seed=None):
    """The bench/experiment.sh command line of one seed: both arms, in run_dir; with stage2_from, stage 2 only, from
    <stage2_from>/seed<start_seed> (its own seed's folder when start_seed is None)."""
    if stage2_from:
        start = seed if start_seed is None else start_seed
        flags = [*flags, "--stage2_from", os.path.join(stage2_from, f"seed{start}")]
    return ["bash", os.path.join(ROOT, "bench", "experiment.sh"), "--out_dir", run_dir, "--seed", str(seed), "--ablation",
            *flags]


def run_seed(out_dir: str, seed: int, flags, stage2_from=None, start_seed=None) -> dict:
    run_dir = os.path.join(out_dir, f"seed{seed}")
    summary = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(summary):
        with open(os.path.join(out_dir, f"seed{seed}.log"), "w") as log:
            subprocess.run(experiment_command(run_dir, seed, flags, stage2_from, start_seed),
                           stdout=log, stderr=subprocess.STDOUT, check=True)
    with open(summary) as handle:
        return json.load(handle)


def spread(values):
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def effect_of_lip_loss(wer) -> dict:
    """The issue's verdict on per-seed observer WERs {"after": [...], "ablation": [...]}: each arm's mean and
    seed std, the effect (ablation's mean - lip loss'), twice the larger std, whether the effect is >= 0.10
    and beyond it, and the paired effect (each seed's own difference, mean +- std)."""
    stats = {arm: spread(wer[arm]) for arm in ARMS}
    effect = stats["ablation"]["mean"] - stats["after"]["mean"]
    bound = 2 * max(stats["after"]["std"], stats["ablation"]["std"])
    paired = [without - with_lip for with_lip, without in zip(wer["after"], wer["ablation"])]
    return {"spread": stats, "effect": effect, "twice_larger_std": bound,
            "paired_effect": {"per_seed": paired, **spread(paired)},
            "beyond_spread": effect > bound, "meets_0.10": effect >= 0.10 and effect > bound}


def main(args) -> int:
    os.makedirs(args.out_dir, exist_ok=True)
    rows = {s: run_seed(args.out_dir, s, args.experiment_flags, args.stage2_from, args.start_seed) for s in args.seeds}
    wer = {arm: [rows[s]["observer"]["wer"][arm] for s in args.seeds] for arm in ARMS}
    print("| seed | observer WER, lip loss | observer WER, no lip loss | mouth sync r (lip / no lip) | PSNR dB (lip / no lip) |")
    print("| --- | --- | --- | --- | --- |")
    for s in args.seeds:
        m = rows[s]["metrics"]
        print(f"| {s} | {wer['after'][args.seeds.index(s)]:.3f} | {wer['ablation'][args.seeds.index(s)]:.3f} | "
              f"{m['after']['mouth_sync']:.3f} / {m['ablation']['mouth_sync']:.3f} | "
              f"{m['after']['psnr']:.2f} / {m['ablation']['psnr']:.2f} |")
    verdict = effect_of_lip_loss(wer)
    stats, paired = verdict["spread"], verdict["paired_effect"]
    print(f"| mean +- std | {stats['after']['mean']:.3f} +- {stats['after']['std']:.3f} | "
          f"{stats['ablation']['mean']:.3f} +- {stats['ablation']['std']:.3f} | | |")
    print(f"| effect per seed (no lip loss - lip loss) | {' / '.join(f'{d:+.3f}' for d in paired['per_seed'])} | "
          f"{paired['mean']:+.3f} +- {paired['std']:.3f} | | |")
    print(json.dumps({"seeds": args.seeds, "start_seed": args.start_seed, "experiment_flags": args.experiment_flags, "observer_wer": wer, **verdict}))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
