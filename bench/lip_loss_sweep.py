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

`--grid_root G`: the real main job instead (`bench/grid_experiment.sh --grid_root G`, GRID s1, Cooke et al. 2006,
CC BY 4.0; pass `--data_dir` after `--` so that the seeds prepare GRID once). There the verdict is the real-data
issue's: the lip loss is claimed to help only if the mean paired gain is >= 0.05 observer WER, every seed gains,
and the mean exceeds twice the paired differences' standard deviation; with `--read_last K` after `--` each arm is
also read at its last K checkpoints (the table's last column).

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
    p.add_argument("--grid_root", default=None, help="run the real main job on this GRID folder (bench/grid_experiment.sh)")
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


def experiment_command(run_dir: str, seed: int, flags, stage2_from=None, start_seed=None, grid_root=None):
    """The bench/experiment.sh command line of one seed: both arms, in run_dir; with stage2_from, stage 2 only, from
    <stage2_from>/seed<start_seed> (its own seed's folder when start_seed is None)."""
    if stage2_from:
        start = seed if start_seed is None else start_seed
        flags = [*flags, "--stage2_from", os.path.join(stage2_from, f"seed{start}")]
    script = ["grid_experiment.sh", "--grid_root", grid_root] if grid_root else ["experiment.sh"]
    return ["bash", os.path.join(ROOT, "bench", script[0]), *script[1:], "--out_dir", run_dir, "--seed", str(seed),
            "--ablation", *flags]


def run_seed(out_dir: str, seed: int, flags, stage2_from=None, start_seed=None, grid_root=None) -> dict:
    run_dir = os.path.join(out_dir, f"seed{seed}")
    summary = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(summary):
        with open(os.path.join(out_dir, f"seed{seed}.log"), "w") as log:
            subprocess.run(experiment_command(run_dir, seed, flags, stage2_from, start_seed, grid_root),
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
    pair = spread(paired)
    return {"spread": stats, "effect": effect, "twice_larger_std": bound,
            "paired_effect": {"per_seed": paired, **pair},
            "beyond_spread": effect > bound, "meets_0.10": effect >= 0.10 and effect > bound,
            "real_data_claim": pair["mean"] >= 0.05 and all(d > 0 for d in paired) and pair["mean"] > 2 * pair["std"]}


def main(args) -> int:
    os.makedirs(args.out_dir, exist_ok=True)
    rows = {s: run_seed(args.out_dir, s, args.experiment_flags, args.stage2_from, args.start_seed, args.grid_root)
            for s in args.seeds}
    wer = {arm: [rows[s]["metrics"][arm]["observer_wer"] for s in args.seeds] for arm in ARMS}
    lse = all("lse_c" in rows[s]["metrics"]["after"] for s in args.seeds)
    last = {s: os.path.join(args.out_dir, f"seed{s}", "observer_last.json") for s in args.seeds}
    last = {s: json.load(open(p)) for s, p in last.items() if os.path.isfile(p)}
    print("| seed | observer WER, lip loss | observer WER, no lip loss | mouth sync r (lip / no lip) | PSNR dB (lip / no lip) |"
          + (" LSE-C (lip / no lip) |" if lse else "") + (" observer WER at earlier checkpoints |" if last else ""))
    print("| --- | --- | --- | --- | --- |" + (" --- |" if lse else "") + (" --- |" if last else ""))
    for k, s in enumerate(args.seeds):
        m = rows[s]["metrics"]
        print(f"| {s} | {wer['after'][k]:.3f} | {wer['ablation'][k]:.3f} | "
              f"{m['after']['mouth_sync']:.3f} / {m['ablation']['mouth_sync']:.3f} | "
              f"{m['after']['psnr']:.2f} / {m['ablation']['psnr']:.2f} |"
              + (f" {m['after']['lse_c']:.2f} / {m['ablation']['lse_c']:.2f} |" if lse else "")
              + (" " + ", ".join(f"{t}: {v:.3f}" for t, v in last.get(s, {}).items()) + " |" if last else ""))
    verdict = effect_of_lip_loss(wer)
    stats, paired = verdict["spread"], verdict["paired_effect"]
    print(f"| mean +- std | {stats['after']['mean']:.3f} +- {stats['after']['std']:.3f} | "
          f"{stats['ablation']['mean']:.3f} +- {stats['ablation']['std']:.3f} | | |")
    print(f"| effect per seed (no lip loss - lip loss) | {' / '.join(f'{d:+.3f}' for d in paired['per_seed'])} | "
          f"{paired['mean']:+.3f} +- {paired['std']:.3f} | | |")
    print(json.dumps({"seeds": args.seeds, "start_seed": args.start_seed, "grid_root": args.grid_root,
                      "experiment_flags": args.experiment_flags, "observer_wer": wer,
                      "observer_wer_last": {str(s): v for s, v in last.items()}, **verdict}))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
