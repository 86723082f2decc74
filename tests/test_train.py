"""train.py: what each stage trains, the stage schedule, exact and safe resume, DDP equivalence, learning,
divergence rollback, the cpu preset through inference. The generator runs at the cpu preset (every
property here holds at any width; the paper's layout is tested in test_talklip.py)."""
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from models.avhubert import load_avhubert, load_lip_reader
from models.presets import talklip_preset
from models.talklip import load_talklip
from tests.conftest import ROOT, run_module
from training.expert import new_model
from training.trainer import Curriculum, TrainConfig, Trainer, warmdown_scale
from utils.corpus import read_transcript
from utils.device import has_native_bf16
from utils.errors import TalkLipError


def config(corpus, one_shard, expert, ckpt_dir, **kw):
    data, _ = corpus
    base = dict(file_dir=data, video_root=f"{data}/main", audio_root=str(one_shard / "audio"),
                bbx_root=str(one_shard / "bbx"), word_root=f"{data}/main", avhubert_path=expert,
                checkpoint_dir=str(ckpt_dir), batch_size=1, num_worker=0, windows_per_clip=1, valid_clips=1,
                tensorboard=False, no_progress=True, device="cpu", ckpt_interval=1000, generator_preset="cpu")
    base.update(kw)
    return TrainConfig(**base)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before, module, prefix=""):
    return {k for k, v in module.named_parameters() if k.startswith(prefix) and not torch.equal(before[k], v)}


def test_expert_written_by_train_expert_loads(tiny_expert):
    expert = load_avhubert(tiny_expert)
    assert expert.codec is not None and expert.encoder.w2v_model.cfg.resnet_width == 8


def test_an_expert_written_before_its_config_was_kept_still_loads_and_reads():
    """weights/grid_expert.pt was written before train_expert kept its ExpertConfig in the file: it loads as
    before, with its training summary, and nothing asks for the config."""
    shipped = os.path.join(ROOT, "weights", "grid_expert.pt")
    saved = torch.load(shipped, map_location="cpu", weights_only=False)
    assert "expert_config" not in saved and "train_summary" in saved
    expert = load_lip_reader(shipped, "")
    assert expert.codec is not None and len(expert.codec.dictionary) > 10


def test_each_stage_trains_exactly_its_parameters(corpus, one_shard, tiny_expert, tmp_path):
    trainer = Trainer(config(corpus, one_shard, tiny_expert, tmp_path))
    batch = trainer.next_micro_batches()[0]
    layers = [f"audio_encoder.w2v_model.encoder.layers.{i}." for i in range(2)]   # tiny: 2 layers, all "last three"
    for stage in (0, 1, 2):
        trainer.curriculum.stage = stage
        gen, disc, expert = snapshot(trainer.gen), snapshot(trainer.disc), snapshot(trainer.expert)
        trainer.train_step([batch])
        moved = changed(gen, trainer.gen)
        assert "face_decoder_blocks.0.0.conv_block.0.weight" in moved and "audio_map.weight" in moved
        assert not any(k.startswith("audio_encoder.w2v_model.feature_extractor") for k in moved)
        assert any(k.startswith(tuple(layers)) for k in moved) == (stage >= 1)
        assert any(k.startswith("sync_net.") for k in moved) == (stage >= 2)
        assert changed(disc, trainer.disc) == set(disc)               # every discriminator weight steps
        assert not changed(expert, trainer.expert)                    # the expert stays frozen


def test_resumed_run_equals_an_uninterrupted_one(corpus, one_shard, tiny_expert, tmp_path):
    kw = dict(ckpt_interval=2, patience=0, lr=1e-3)
    Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "a", max_steps=4, **kw)).run()
    Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "b", max_steps=2, **kw)).run()
    resumed = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "b", max_steps=4, **kw))
    summary = resumed.run()
    assert summary["step"] == 4
    a = torch.load(tmp_path / "a" / "state_step000000004.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "state_step000000004.pt", weights_only=True)
    assert a["curriculum"] == b["curriculum"]
    for part in ("gen", "disc"):
        for k, v in a[part].items():
            assert torch.allclose(v.float(), b[part][k].float(), atol=1e-6), f"{part}.{k}"
    # the generator file is the original layout and loads for inference
    assert load_talklip(str(tmp_path / "b" / "checkpoint_step000000004.pth")).audio_dim == 64


def test_a_state_file_written_before_the_run_state_object_resumes_the_same(corpus, one_shard, tiny_expert, tmp_path):
    """State files written before RunState held the run's progress as flat entries (step, epoch, epoch_step,
    rollbacks, ooms, history, train_log, recent) at the top of the dict: one in that layout resumes to the
    same step-4 weights, history and log as the uninterrupted run."""
    kw = dict(ckpt_interval=2, patience=0, lr=1e-3, log_interval=1)
    whole = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "a", max_steps=4, **kw)).run()
    Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "b", max_steps=2, **kw)).run()
    path = tmp_path / "b" / "state_step000000002.pt"
    state = torch.load(path, weights_only=True)
    run = state.pop("run")
    assert set(run) - {"high_disc"} == {"step", "epoch", "epoch_step", "rollbacks", "ooms", "history", "train_log",
                                        "recent"}
    state.update({k: v for k, v in run.items() if k != "high_disc"})          # the layout before
    torch.save(state, path)
    resumed = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "b", max_steps=4, **kw)).run()
    assert (resumed["step"], resumed["history"], resumed["train_log"]) == (4, whole["history"], whole["train_log"])
    a, b = (torch.load(tmp_path / run / "state_step000000004.pt", weights_only=True) for run in ("a", "b"))
    for part in ("gen", "disc"):
        assert all(torch.equal(v, b[part][k]) for k, v in a[part].items()), part


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_one_process_with_the_doubled_batch(corpus, one_shard, tiny_expert, tmp_path):
    """2 gloo processes x 1 clip == 1 process x 2 micro-batches of 1 clip (the same samples, and the
    same per-clip batch statistics as DDP computes them)."""
    data, _ = corpus
    args = ["--file_dir", data, "--video_root", f"{data}/main", "--audio_root", one_shard / "audio",
            "--bbx_root", one_shard / "bbx", "--word_root", f"{data}/main", "--avhubert_path", tiny_expert,
            "--batch_size", 1, "--windows_per_clip", 1, "--num_worker", 0, "--max_steps", 1, "--device", "cpu",
            "--generator_preset", "cpu", "--no_tensorboard", "--no_progress"]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(free_port()), os.path.join(ROOT, "train.py"),
                          *map(str, args), "--checkpoint_dir", str(tmp_path / "ddp")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *map(str, args), "--accum_steps", "2",
                          "--checkpoint_dir", str(tmp_path / "one")], capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    a = torch.load(tmp_path / "ddp" / "checkpoint_step000000001.pth", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "one" / "checkpoint_step000000001.pth", weights_only=True)["state_dict"]
    load_talklip(str(tmp_path / "one" / "checkpoint_step000000001.pth"))     # the original layout loads
    for k, v in a.items():
        if v.is_floating_point() and "running_" not in k:
            assert torch.allclose(v, b[k], atol=1e-6), k


def test_a_short_run_lowers_the_validation_l1(corpus, one_shard, tiny_expert, tmp_path):
    trainer = Trainer(config(corpus, one_shard, tiny_expert, tmp_path, lr=2e-3, perp_w=0.0))   # the quickstart's lr
    before = trainer.validate()["l1"]
    batches = [trainer.next_micro_batches()[0] for _ in range(trainer.data.sampler.steps_per_epoch())]
    for i in range(12):
        trainer.train_step([batches[i % len(batches)]])
        trainer.state.step += 1
    assert trainer.validate()["l1"] < before * 0.95


def test_injected_divergence_rolls_back_then_gives_up(corpus, one_shard, tiny_expert, tmp_path):
    cfg = config(corpus, one_shard, tiny_expert, tmp_path, max_steps=8, diverge_threshold=-1.0, diverge_steps=2,
                 max_rollbacks=1)
    trainer = Trainer(cfg)
    with pytest.raises(TalkLipError, match="diverged.*1 rollbacks did not help"):
        trainer.run()
    log = (tmp_path / "talklip.log").read_text()
    assert "rolling back to" in log and "state_step000000000.pt" in log and "(rollback 1)" in log
    assert trainer.state.rollbacks == 1


def test_bad_inputs_give_one_line_errors_and_write_nothing(corpus, one_shard, tmp_path):
    data, _ = corpus
    args = ["--file_dir", data, "--video_root", f"{data}/main", "--audio_root", one_shard / "audio",
            "--bbx_root", one_shard / "bbx", "--word_root", f"{data}/main", "--device", "cpu"]
    proc = run_module("train", *args, "--avhubert_path", tmp_path / "nope.pt", "--checkpoint_dir", tmp_path / "ck")
    assert proc.returncode == 2 and "nope.pt does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "ck").exists()
    proc = run_module("train_expert", "--file_dir", tmp_path, "--video_root", f"{data}/main", "--word_root",
                      f"{data}/main", "--out", tmp_path / "expert.pt", "--steps", 1)
    assert proc.returncode == 2 and "train.txt does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "expert.pt").exists()


def test_the_command_line_and_the_library_give_one_configuration(tmp_path):
    """train.py's flags are TrainConfig's fields: the same flags give the same config as the library,
    every default of the parser is the dataclass's, and an unknown option is an error on both sides."""
    import dataclasses
    import train
    from training.config import LossWeights, config_from_args
    required = dict(file_dir="d", video_root="d/main", audio_root="d/audio", bbx_root="d/bbx", avhubert_path="e.pt",
                    checkpoint_dir=str(tmp_path))
    flags = [a for k, v in required.items() for a in (f"--{k}", v)]
    assert config_from_args(train.parse_args(flags)) == TrainConfig(**required)
    chosen = dict(lip_w=0.5, perp_w=0.0, batch_size=3, stage_max_steps=(4, 5, 6), tensorboard=False, no_lip_loss=True,
                  disc_lr=2e-4, generator_preset="cpu")
    cfg = config_from_args(train.parse_args(flags + ["--lip_w", "0.5", "--perp_w", "0", "--batch_size", "3",
                                                     "--stage_max_steps", "4,5,6", "--no_tensorboard", "--no_lip_loss",
                                                     "--disc_lr", "2e-4", "--generator_preset", "cpu"]))
    assert cfg == TrainConfig(**required, **chosen)
    assert cfg.weights == LossWeights(lip_w=0.5, perp_w=0.0, cont_w=1e-3, lip_loss=False)
    assert config_from_args(train.parse_args(flags + ["--mouth_l1_w", "4"])).weights.mouth_l1_w == 4.0
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            assert getattr(train.parse_args(flags), f.name) == f.default, f.name
    with pytest.raises(TalkLipError, match="lip_weight"):
        TrainConfig.from_dict({**required, "lip_weight": 1.0})
    with pytest.raises(SystemExit):
        train.parse_args(flags + ["--lip_weight", "1"])


def test_curriculum_plateaus_and_step_bounds():
    c = Curriculum(patience=0, min_steps=(3, 0, 0), max_steps=(0, 2, 0))
    assert not c.validated(1.0, 1)                     # a new best
    assert not c.validated(1.0, 2)                     # a plateau, but stage 0 must run 3 steps
    assert c.validated(1.0, 3) and (c.stage, c.stage_start) == (1, 3)
    assert not c.stepped(4) and c.stepped(5) and (c.stage, c.stage_start) == (2, 5)    # stage 1: 2 steps at most
    assert not c.validated(0.5, 5)                     # a stage must have run a step before a plateau ends it
    assert not c.stepped(10 ** 6)                      # stage 2 has no maximum
    restored = Curriculum()
    restored.load_state_dict(c.state_dict())
    assert restored.state_dict() == c.state_dict()


def test_learning_rate_warmdown():
    assert [warmdown_scale(s, 10, 4) for s in range(10)] == pytest.approx([1] * 6 + [0.775, 0.55, 0.325, 0.1])
    assert warmdown_scale(3, None, 0) == 1.0
    # --lr_hold 3: the same warm-down, ended 3 steps early, then its floor for those 3
    unheld = [warmdown_scale(s, 10, 4) for s in range(10)]
    assert [warmdown_scale(s, 13, 4, hold=3) for s in range(13)] == unheld + unheld[-1:] * 3


def test_the_trainer_steps_at_the_held_warmdowns_learning_rates(corpus, one_shard, tiny_expert, tmp_path):
    """--lr_warmdown 2 --lr_hold 2 --max_steps 6: the generator's and the discriminator's rates are full for
    two steps, half-way down at the third, a tenth from the fourth (worked out by hand), an --lr_hold
    without a warm-down refused."""
    trainer = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "a", lr=1e-3, disc_lr=1e-4, max_steps=6,
                             lr_warmdown=2, lr_hold=2))
    batch = trainer.next_micro_batches()[0]
    seen = []
    for step in range(6):
        trainer.state.step = step
        trainer.train_step([batch])
        seen.append((trainer.optim.gen.param_groups[0]["lr"], trainer.optim.disc.param_groups[0]["lr"]))
    scales = [1, 1, 0.55, 0.1, 0.1, 0.1]
    assert seen == [(pytest.approx(1e-3 * s), pytest.approx(1e-4 * s)) for s in scales]
    with pytest.raises(TalkLipError, match="--lr_hold holds the end of --lr_warmdown"):
        Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "b", max_steps=6, lr_hold=2))


def test_av_shift_moves_a_training_clips_speech_by_a_new_offset_each_epoch(corpus, one_shard, tiny_expert):
    """--av_shift 2: each reading of a training clip gets the unshifted features moved by a whole number of
    frames in -2..2 (row t from row t + k, the ends repeated; checked row by row against the unshifted
    item), the offset drawn anew per epoch, the windows and faces untouched; a validation clip stays in step."""
    from training.data import TalkLipDataset
    from training.labels import TRANSCRIPT
    data, splits = corpus
    name = splits["train"][0]
    labels = {name: (TRANSCRIPT, read_transcript(f"{data}/main", name))}
    codec = load_avhubert(tiny_expert).codec

    def dataset(shift, train=True):
        return TalkLipDataset("train", data, f"{data}/main", str(one_shard / "audio"), str(one_shard / "bbx"),
                              labels, codec, train=train, names=[name], windows_per_clip=2, av_shift=shift)
    plain, shifted = dataset(0), dataset(2)
    offsets = []
    for epoch in range(8):
        plain.set_epoch(epoch)
        shifted.set_epoch(epoch)
        a, b = plain[0], shifted[0]
        assert torch.equal(a["faces_in"], b["faces_in"]) and torch.equal(a["picked"], b["picked"])
        rows = len(a["audio"])
        fits = [k for k in range(-2, 3)
                if all(torch.equal(b["audio"][t], a["audio"][min(max(t + k, 0), rows - 1)]) for t in range(rows))]
        assert len(fits) == 1, fits
        offsets.append(fits[0])
    assert len(set(offsets)) >= 2 and set(offsets) <= {-2, -1, 0, 1, 2}, offsets
    assert torch.equal(dataset(2, train=False)[0]["audio"], dataset(0, train=False)[0]["audio"])


def test_a_fixed_schedule_reaches_stage_2_and_validates_in_it(corpus, one_shard, tiny_expert, tmp_path):
    cfg = config(corpus, one_shard, tiny_expert, tmp_path, ckpt_interval=2, stage_min_steps=(2, 1, 3),
                 stage_max_steps=(2, 1, 3), patience=100)
    summary = Trainer(cfg).run()
    assert (summary["step"], summary["stage"]) == (6, 3)
    assert [(h["step"], h["stage"]) for h in summary["history"]] == [(2, 0), (4, 2), (6, 2)]
    log = (tmp_path / "talklip.log").read_text()
    for step, move in ((2, "0 -> 1"), (3, "1 -> 2"), (6, "2 -> 3")):
        assert f"step {step}: stage {move}" in log


def test_resume_refuses_other_settings_and_keeps_the_history(corpus, one_shard, tiny_expert, tmp_path):
    Trainer(config(corpus, one_shard, tiny_expert, tmp_path, max_steps=2, ckpt_interval=1)).run()
    with pytest.raises(TalkLipError, match=r"--batch_size 1 -> 2.*--resume_anyway") as err:
        Trainer(config(corpus, one_shard, tiny_expert, tmp_path, max_steps=3, ckpt_interval=1, batch_size=2)).run()
    assert "\n" not in str(err.value)
    with pytest.raises(TalkLipError, match="--generator_preset 'cpu' -> 'paper'"):
        Trainer(config(corpus, one_shard, tiny_expert, tmp_path, max_steps=3, generator_preset="paper")).run()
    with pytest.raises(TalkLipError, match="--resume_anyway cannot change --generator_preset .* --generator_preset cpu"):
        Trainer(config(corpus, one_shard, tiny_expert, tmp_path, max_steps=3, generator_preset="paper",
                       resume_anyway=True)).run()       # was a 238-line size-mismatch traceback
    summary = Trainer(config(corpus, one_shard, tiny_expert, tmp_path, max_steps=3, ckpt_interval=1)).run()
    assert [h["step"] for h in summary["history"]] == [1, 2, 3]          # validations from before the resume too
    anyway = config(corpus, one_shard, tiny_expert, tmp_path, max_steps=4, ckpt_interval=1, accum_steps=2,
                    resume_anyway=True)
    assert Trainer(anyway).run()["step"] == 4
    assert "resuming anyway" in (tmp_path / "talklip.log").read_text()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_unsafe_or_damaged_states_are_skipped_never_unpickled(corpus, one_shard, tiny_expert, tmp_path):
    Trainer(config(corpus, one_shard, tiny_expert, tmp_path, max_steps=1, ckpt_interval=1)).run()
    good = torch.load(tmp_path / "state_step000000001.pt", weights_only=True)
    torch.save({**good, "step": 5, "extra": _RunsCode()}, tmp_path / "state_step000000005.pt")   # runs code if unpickled
    raw = (tmp_path / "state_step000000001.pt").read_bytes()
    (tmp_path / "state_step000000009.pt").write_bytes(raw[:len(raw) // 2])                     # truncated copy
    trainer = Trainer(config(corpus, one_shard, tiny_expert, tmp_path, max_steps=2, ckpt_interval=1))
    trainer.run()
    log = (tmp_path / "talklip.log").read_text()
    assert "skipping" in log and "state_step000000009.pt" in log and "state_step000000005.pt" in log
    assert "could run code" in log and "weights_only=False" not in log
    assert "resumed from" in log and "state_step000000001.pt: step 1" in log
    assert not os.path.exists(os.path.join(ROOT, "pwned")) and not (tmp_path / "pwned").exists()
    assert (tmp_path / "state_step000000009.pt.refused").exists() and (tmp_path / "state_step000000005.pt.refused").exists()
    assert log.count("saved step 2:") == 1                   # the last step, validated and saved, is not saved again


RECORD_OPENS = """
import os, sys
def _hook(event, args):
    if (event == "open" and isinstance(args[0], (str, bytes, os.PathLike))
            and os.path.abspath(os.fsdecode(args[0])).startswith(os.environ["TALKLIP_TEST_WATCH"])
            and "observer" in os.path.basename(os.fsdecode(args[0]))):
        with open(os.environ["TALKLIP_TEST_OPENS"], "a") as log:
            log.write(os.fsdecode(args[0]) + "\\n")
sys.addaudithook(_hook)
"""


def test_training_never_opens_the_observer(corpus, one_shard, tiny_expert, tmp_path):
    """The quickstart keeps its observer (observer.pt) beside the expert; train.py, run with every loss on,
    must never read it: the observer scores the generator, it must not have shaped it."""
    data, _ = corpus
    readers = tmp_path / "readers"
    os.makedirs(readers)
    shutil.copy(tiny_expert, readers / "expert.pt")
    shutil.copy(tiny_expert, readers / "observer.pt")
    hook = tmp_path / "hook"
    os.makedirs(hook)
    (hook / "sitecustomize.py").write_text(RECORD_OPENS)
    opens = tmp_path / "opens.txt"
    env = dict(os.environ, PYTHONPATH=f"{hook}{os.pathsep}{ROOT}", TALKLIP_TEST_OPENS=str(opens),
               TALKLIP_TEST_WATCH=str(readers))
    args = ["--file_dir", data, "--video_root", f"{data}/main", "--audio_root", one_shard / "audio", "--bbx_root",
            one_shard / "bbx", "--word_root", f"{data}/main", "--avhubert_path", readers / "expert.pt",
            "--checkpoint_dir", tmp_path / "ck", "--generator_preset", "cpu", "--batch_size", 1, "--windows_per_clip", 1,
            "--num_worker", 0, "--max_steps", 1, "--valid_clips", 1, "--start_stage", 2, "--device", "cpu",
            "--no_tensorboard", "--no_progress"]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "lip" in (tmp_path / "ck" / "talklip.log").read_text()          # the expert's loss was on
    (readers / "probe_observer.txt").write_text("x")                       # the hook does record opens
    subprocess.run([sys.executable, "-c", f"open({str(readers / 'probe_observer.txt')!r}).read()"], env=env, check=True)
    recorded = opens.read_text().split()
    assert recorded == [str(readers / "probe_observer.txt")], recorded


def test_cpu_preset_round_trip_through_inference(corpus, one_shard, tiny_expert, tmp_path):
    """train.py --generator_preset cpu writes checkpoints that inf_test.py and inf_demo.py load with no flag."""
    data, splits = corpus
    proc = run_module("train", "--file_dir", data, "--video_root", f"{data}/main", "--audio_root", one_shard / "audio",
                      "--bbx_root", one_shard / "bbx", "--word_root", f"{data}/main", "--avhubert_path", tiny_expert,
                      "--checkpoint_dir", tmp_path / "ck", "--generator_preset", "cpu", "--batch_size", 1,
                      "--windows_per_clip", 1, "--num_worker", 0, "--max_steps", 2, "--valid_clips", 1,
                      "--device", "cpu", "--no_tensorboard", "--no_progress")
    assert proc.returncode == 0, proc.stderr
    ckpt = tmp_path / "ck" / "checkpoint_step000000002.pth"
    model = load_talklip(str(ckpt))
    assert model.config == talklip_preset("cpu") and model.face_encoder_blocks[1][0].conv_block[0].out_channels == 8
    (tmp_path / "test.txt").write_text(splits["test"][0] + "\n")
    synth = run_module("inf_test", "--filelist", tmp_path / "test.txt", "--video_root", f"{data}/main", "--audio_root",
                       one_shard / "audio", "--bbx_root", one_shard / "bbx", "--save_root", tmp_path / "synt",
                       "--ckpt_path", ckpt, "--device", "cpu")
    assert synth.returncode == 0, synth.stderr
    assert (tmp_path / "synt" / f"{splits['test'][0]}.mp4").is_file()
    dub = run_module("inf_demo", "--video_path", f"{data}/main/{splits['test'][0]}.mp4", "--wav_path",
                     one_shard / "audio" / f"{splits['all'][1]}.wav", "--ckpt_path", ckpt, "--save_path",
                     tmp_path / "dub", "--device", "cpu", "--no_progress")
    assert dub.returncode == 0, dub.stderr
    assert (tmp_path / "dub.mp4").is_file()


def test_train_expert_learns_its_training_clips_and_writes_a_loadable_expert(corpus, tmp_path):
    from training.config import ExpertConfig
    from training.expert import ClipCache, evaluate_expert, train_expert
    data, _ = corpus
    out = str(tmp_path / "expert.pt")
    result = train_expert(ExpertConfig(file_dir=data, video_root=f"{data}/main", word_root=f"{data}/main", out=out,
                                       steps=60, batch_size=2, lr=3e-3, vocab_size=60, device="cpu", no_progress=True),
                          log=lambda *_: None)
    expert = load_avhubert(out)
    assert expert.codec is not None
    for key in ("token_acc", "token_acc_blank", "train_token_acc", "train_token_acc_blank", "wer"):
        assert 0.0 <= result[key] <= (10.0 if key == "wer" else 1.0)
    names = [line.split()[0] for line in open(f"{data}/train.txt") if line.strip()]
    clips = ClipCache(names, f"{data}/main", f"{data}/main", expert.codec, False)
    torch.manual_seed(1)
    untrained = new_model("tiny", len(expert.codec.dictionary)).eval()
    before = evaluate_expert(untrained, clips, "cpu", decode=False)["token_acc"]
    assert result["train_token_acc"] > before + 0.2       # it learnt the transcripts of its clips


def without_transcripts(corpus, one_shard, tmp_path, keep=()):
    """A word_root holding only the transcripts of ``keep``, and a private copy of the boxes (the
    pseudo-label cache is written next to them)."""
    import shutil
    data, _ = corpus
    words = tmp_path / "words"
    for name in keep:
        os.makedirs(words / os.path.dirname(name), exist_ok=True)
        shutil.copy(f"{data}/main/{name}.txt", words / f"{name}.txt")
    os.makedirs(words, exist_ok=True)
    shutil.copytree(one_shard / "bbx", tmp_path / "bbx")
    return str(words), str(tmp_path / "bbx")


def test_without_transcripts_pseudo_labels_are_made_once_and_the_expert_stage_learns(corpus, one_shard, tiny_expert,
                                                                                   tmp_path):
    from training.labels import PSEUDO, pseudo_label_path
    words, bbx = without_transcripts(corpus, one_shard, tmp_path)
    cfg = config(corpus, one_shard, tiny_expert, tmp_path / "ck", word_root=words, bbx_root=bbx, start_stage=2,
                 lr=2e-3, perp_w=0.0, lip_w=0.5)          # a lip weight that lets 16 steps show the trend
    trainer = Trainer(cfg)
    names = trainer.data.train_set.names + trainer.data.valid_set.names
    files = {n: pseudo_label_path(bbx, n) for n in names}
    assert all(os.path.isfile(f) for f in files.values())
    assert any(kind == PSEUDO for kind, _ in trainer.data.labels.values())
    stamps = {n: os.path.getmtime(f) for n, f in files.items()}
    lips = []
    for _ in range(16):
        result = trainer.train_step(trainer.next_micro_batches())
        trainer.count_step()
        trainer.after_step(result)
        logs = result.logs
        assert torch.isfinite(torch.tensor(logs["lip"]))
        lips.append(logs["lip"])
    assert sum(lips[-4:]) < sum(lips[:4])                  # the expert's loss on the pseudo-labels decreases
    again = Trainer(cfg)                                   # a resumed run reads the cache
    assert again.data.labels == trainer.data.labels
    assert {n: os.path.getmtime(f) for n, f in files.items()} == stamps
    log = open(tmp_path / "ck" / "talklip.log").read()
    assert log.count("pseudo-labelling") == 1 and "with pseudo-labels" in log


def test_no_lip_loss_needs_no_text_and_keeps_the_contrastive_loss(corpus, one_shard, tiny_expert, tmp_path):
    words, bbx = without_transcripts(corpus, one_shard, tmp_path)
    trainer = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "ck", word_root=None, bbx_root=bbx,
                             start_stage=2, no_lip_loss=True))
    logs = trainer.train_step(trainer.next_micro_batches()).logs
    assert "lip" not in logs and logs["cont"] > 0
    valid = trainer.validate()
    assert "lip" not in valid and "token_acc" not in valid and valid["cont"] > 0
    assert not [f for _, _, fs in os.walk(bbx) for f in fs if f.endswith(".pseudo.json")]


def test_the_ablation_removes_the_lip_term_and_nothing_else(corpus, one_shard, tiny_expert, tmp_path):
    """--no_lip_loss keeps every other weight (L1's 1 - lip_w - perp_w too): a step before stage 2 is the
    same with and without it, bit for bit; in stage 2 the lip term, and only it, makes them differ."""
    def one_step(stage, ablation):
        trainer = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / f"ck{stage}{ablation}", start_stage=stage,
                                 lip_w=0.5, no_lip_loss=ablation, seed=3))
        logs = trainer.train_step(trainer.next_micro_batches()).logs
        return snapshot(trainer.gen), logs
    for stage in (0, 1):
        (full, _), (ablated, _) = one_step(stage, False), one_step(stage, True)
        assert all(torch.equal(full[k], ablated[k]) for k in full), stage
    (full, logs), (ablated, ablated_logs) = one_step(2, False), one_step(2, True)
    assert not all(torch.equal(full[k], ablated[k]) for k in full)
    assert logs["lip"] > 0 and "lip" not in ablated_logs
    assert logs["loss"] - ablated_logs["loss"] == pytest.approx(0.5 * logs["lip"], rel=1e-4)


def test_an_ablation_branched_where_stage_2_begins_equals_one_trained_from_step_0(corpus, one_shard, tiny_expert,
                                                                                  tmp_path):
    """The quickstart's ablation: --branch_from the main run's state at the start of stage 2 (saved
    there because the stage changed) with --no_lip_loss gives, bit for bit, the ablation trained alone. The
    branch logs its first mean at step 3, with the main run's step-1 and -2 losses (which had a lip term)
    not carried over: a branch at a step off the log interval stopped with KeyError: 'lip'."""
    kw = dict(stage_min_steps=(1, 1, 2), stage_max_steps=(1, 1, 2), patience=100, lip_w=0.5, seed=3, log_interval=3)
    Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "main", **kw)).run()
    alone = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "alone", no_lip_loss=True, **kw)).run()
    start = tmp_path / "main" / "state_step000000002.pt"
    assert torch.load(start, weights_only=True)["curriculum"]["stage"] == 2
    branched = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "branch", no_lip_loss=True,
                              branch_from=str(start), **kw)).run()
    assert branched["step"] == alone["step"] == 4
    final = {name: torch.load(tmp_path / name / "state_step000000004.pt", weights_only=True)
             for name in ("main", "alone", "branch")}
    for part in ("gen", "disc"):
        assert all(torch.equal(v, final["branch"][part][k]) for k, v in final["alone"][part].items()), part
    assert not all(torch.equal(v, final["main"]["gen"][k]) for k, v in final["alone"]["gen"].items())
    log = (tmp_path / "branch" / "talklip.log").read_text()
    assert f"branched from {start} at step 2, stage 2" in log and "no_lip_loss False -> True" in log
    with pytest.raises(TalkLipError, match=r"state_step9\.pt does not exist: check the path") as err:
        Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "none", branch_from=str(tmp_path / "state_step9.pt"),
                       **kw)).run()
    assert "\n" not in str(err.value)


def test_a_bf16_step_computes_the_fp32_losses_within_bf16_precision(corpus, one_shard, tiny_expert, tmp_path):
    """--bf16 (the quickstart's precision on CPUs with bf16 instructions): the first stage-2 step, from the
    same weights and batch, gives the fp32 step's losses to within bf16's 3 significant digits."""
    logs = {}
    for bf16 in (False, True):
        trainer = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / f"ck{bf16}", start_stage=2, bf16=bf16))
        logs[bf16] = trainer.train_step(trainer.next_micro_batches()).logs
    for key in ("l1", "perc", "lip", "cont", "disc"):
        assert logs[True][key] == pytest.approx(logs[False][key], rel=0.02), key


def test_native_bf16_is_what_the_kernel_lists_for_the_cpu():
    """has_native_bf16 agrees with the CPU flags quickstart.sh reads to choose its precision."""
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo")
    flags = set(open("/proc/cpuinfo").read().split())
    assert has_native_bf16(torch.device("cpu")) == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_a_mixed_corpus_uses_each_label_where_it_applies(corpus, one_shard, tiny_expert, tmp_path):
    from training.labels import PSEUDO, TRANSCRIPT
    data, splits = corpus
    train = [line.split()[0] for line in open(f"{data}/train.txt") if line.strip()]
    words, bbx = without_transcripts(corpus, one_shard, tmp_path, keep=train[::2])
    trainer = Trainer(config(corpus, one_shard, tiny_expert, tmp_path / "ck", word_root=words, bbx_root=bbx))
    codec = trainer.expert.codec
    for i, name in enumerate(trainer.data.train_set.names):
        kind, text = trainer.data.labels[name]
        target = trainer.data.train_set[i]["target"]
        if name in train[::2]:
            assert kind == TRANSCRIPT and text == read_transcript(f"{data}/main", name)
        else:
            assert kind in (PSEUDO, "neither") and text == open(f"{bbx}/{name}.pseudo.json").read().split('"text": "')[1].split('"')[0]
        assert list(target) == (list(codec.encode(text)) if text else [])
    trainer.next_micro_batches()
    log = open(tmp_path / "ck" / "talklip.log").read()
    assert f"{len(train[::2])} with transcripts" in log


def test_the_mouth_weighted_l1():
    """--mouth_l1_w: 0 is plain L1, a uniform error reads the same at any weight, and an error at the mouth counts
    1 + w times one elsewhere, in the value and in the gradient."""
    import torch.nn.functional as F
    from training.objective import MOUTH_WINDOW, weighted_l1
    torch.manual_seed(0)
    syn, gt = torch.rand(3, 3, 96, 96), torch.rand(3, 3, 96, 96)
    assert torch.equal(weighted_l1(syn, gt, 0.0), F.l1_loss(syn, gt))
    assert weighted_l1(gt + 0.1, gt, 4.0).item() == pytest.approx(0.1, rel=1e-5)
    x0, x1, y0, y1 = (round(v * 96) for v in MOUTH_WINDOW)
    inside, outside = gt.clone(), gt.clone()
    inside[..., y0, x0] += 0.5                              # one pixel at the mouth's corner
    outside[..., 5, 5] += 0.5                               # one on the forehead
    assert weighted_l1(inside, gt, 4.0).item() == pytest.approx(5 * weighted_l1(outside, gt, 4.0).item(), rel=1e-5)
    assert weighted_l1(inside, gt, 4.0) > F.l1_loss(inside, gt) > weighted_l1(outside, gt, 4.0)
    syn.requires_grad_(True)
    weighted_l1(syn, gt, 4.0).backward()
    grad = syn.grad.abs()
    assert torch.allclose(grad[..., y0:y1, x0:x1], grad[..., 0, 0].mean() * 5 * torch.ones(1), rtol=1e-4)
