"""bench/lip_loss_sweep.py's verdict and bench/wide_test.py's test set: the issue's bar computed as the issue
states it, and the wider test set made of held-out clips only, ready to synthesize, made once."""
import os

import numpy as np
import pytest

from bench.lip_loss_sweep import effect_of_lip_loss, parse_args, experiment_command
from bench.wide_test import last_checkpoint, make_test_set


def test_the_verdict_is_the_mean_difference_against_twice_the_larger_seed_std():
    wer = {"after": [0.10, 0.14, 0.12], "ablation": [0.40, 0.30, 0.35]}
    verdict = effect_of_lip_loss(wer)
    std = {arm: float(np.std(v, ddof=1)) for arm, v in wer.items()}
    assert verdict["effect"] == pytest.approx(np.mean(wer["ablation"]) - np.mean(wer["after"]))
    assert verdict["twice_larger_std"] == pytest.approx(2 * max(std.values()))
    assert verdict["spread"]["ablation"]["std"] == pytest.approx(std["ablation"])
    assert verdict["paired_effect"]["per_seed"] == pytest.approx([0.30, 0.16, 0.23])
    assert verdict["beyond_spread"] and verdict["meets_0.10"]
    # every seed gains 0.10, but the seeds differ by more than the arms: beyond 0.10, not beyond the spread
    spread_out = effect_of_lip_loss({"after": [0.1, 0.3, 0.5], "ablation": [0.2, 0.4, 0.6]})
    assert spread_out["paired_effect"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert spread_out["effect"] == pytest.approx(0.1) and not spread_out["beyond_spread"]
    assert not spread_out["meets_0.10"]


def test_the_wide_test_set_is_held_out_clips_ready_to_synthesize_and_made_once(tmp_path):
    test_dir = str(tmp_path / "wide")
    listed = make_test_set(test_dir, av_jitter=0, clips=3, corpus_seed=5)
    corpus = os.path.join(test_dir, "corpus")
    names = open(listed).read().split()
    held_out = open(os.path.join(corpus, "test.txt")).read().split()
    trained = open(os.path.join(corpus, "train.txt")).read().split()
    assert len(names) == 3 and set(names) <= set(held_out) and not set(names) & set(trained)
    for name in names:
        assert os.path.getsize(os.path.join(corpus, "audio", f"{name}.wav")) > 0
        boxes = np.load(os.path.join(corpus, "bbx", f"{name}.npy"))
        assert boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 0
    stamp = os.path.getmtime(os.path.join(corpus, "test.txt"))
    assert make_test_set(test_dir, av_jitter=0, clips=3, corpus_seed=5) == listed
    assert os.path.getmtime(os.path.join(corpus, "test.txt")) == stamp
    with pytest.raises(SystemExit, match="made with .* give another --test_dir"):    # not another corpus' clips
        make_test_set(test_dir, av_jitter=0, clips=3, corpus_seed=5, mouth_scale=1.0)
    with pytest.raises(SystemExit, match="made with .* give another --test_dir"):
        make_test_set(test_dir, av_jitter=0, clips=3, corpus_seed=5, speech_snr=10.0)


def test_an_arm_is_read_at_its_last_generator_checkpoint(tmp_path):
    for name in ("checkpoint_step000000600.pth", "checkpoint_step000000900.pth", "disc_checkpoint_step000001200.pth",
                 "state_step000001200.pt"):
        (tmp_path / name).write_bytes(b"")
    assert last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint_step000000900.pth")
    with pytest.raises(SystemExit, match="no checkpoint_step"):
        last_checkpoint(str(tmp_path / "missing"))


def test_a_common_start_branches_every_seed_from_one_state_and_keeps_each_seed_for_stage_2(capsys):
    def flags_of(cmd):
        return {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i] in ("--seed", "--stage2_from", "--out_dir")}
    for seed in (11, 12):
        own = flags_of(experiment_command(f"sweep/seed{seed}", seed, ["--av_jitter", "2"], "runs/sweepc"))
        common = flags_of(experiment_command(f"sweep/seed{seed}", seed, ["--av_jitter", "2"], "runs/sweepc", 1))
        assert own == {"--out_dir": f"sweep/seed{seed}", "--seed": str(seed), "--stage2_from": f"runs/sweepc/seed{seed}"}
        assert common == {**own, "--stage2_from": "runs/sweepc/seed1"}
    assert "--stage2_from" not in experiment_command("sweep/seed0", 0, [], None, None)
    args = parse_args(["--out_dir", "o", "--stage2_from", "runs/sweepc", "--start_seed", "1", "--seeds", "11", "--",
                       "--av_jitter", "2"])
    assert (args.start_seed, args.seeds, args.experiment_flags) == (1, [11], ["--av_jitter", "2"])
    with pytest.raises(SystemExit) as refused:     # a common start names the sweep it branches from
        parse_args(["--out_dir", "o", "--start_seed", "1"])
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "error: --start_seed needs --stage2_from (the sweep whose seed<T> holds the state where stage 2 begins)")
