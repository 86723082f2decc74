"""train.py: what each stage trains, exact resume, DDP equivalence, learning, divergence rollback."""
import os
import socket
import subprocess
import sys

import pytest
import torch

from evaluation.common import read_transcript
from models.avhubert import load_avhubert
from models.talklip import load_talklip
from tests.conftest import ROOT, run_module
from training.expert import build_codec, new_model, save_expert
from training.trainer import TrainConfig, Trainer
from utils.errors import TalkLipError


@pytest.fixture(scope="module")
def tiny_expert(corpus, tmp_path_factory):
    """A tiny random expert over the corpus's transcripts, in the format train_expert.py writes."""
    data, splits = corpus
    codec = build_codec([read_transcript(f"{data}/main", n).lower() for n in splits["train"]], 60)
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("expert") / "expert.pt")
    save_expert(new_model("tiny", len(codec.dictionary)), codec, path)
    return path


def config(corpus, one_shard, expert, ckpt_dir, **kw):
    data, _ = corpus
    base = dict(file_dir=data, video_root=f"{data}/main", audio_root=str(one_shard / "audio"),
                bbx_root=str(one_shard / "bbx"), word_root=f"{data}/main", avhubert_path=expert,
                checkpoint_dir=str(ckpt_dir), batch_size=1, num_worker=0, windows_per_clip=1, valid_clips=1,
                tensorboard=False, no_progress=True, device="cpu", ckpt_interval=1000)
    base.update(kw)
    return TrainConfig(**base)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before, module, prefix=""):
    return {k for k, v in module.named_parameters() if k.startswith(prefix) and not torch.equal(before[k], v)}


def test_expert_written_by_train_expert_loads(tiny_expert):
    expert = load_avhubert(tiny_expert)
    assert expert.codec is not None and expert.encoder.w2v_model.cfg.resnet_width == 8


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
    a = torch.load(tmp_path / "a" / "state_step000000004.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "state_step000000004.pt", weights_only=False)
    assert a["curriculum"] == b["curriculum"]
    for part in ("gen", "disc"):
        for k, v in a[part].items():
            assert torch.allclose(v.float(), b[part][k].float(), atol=1e-6), f"{part}.{k}"
    # the generator file is the original layout and loads for inference
    assert load_talklip(str(tmp_path / "b" / "checkpoint_step000000004.pth")).audio_dim == 64


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
            "--no_tensorboard", "--no_progress"]
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
    trainer = Trainer(config(corpus, one_shard, tiny_expert, tmp_path, lr=1e-3, perp_w=0.0))
    before = trainer.validate()["l1"]
    batches = [trainer.next_micro_batches()[0] for _ in range(trainer.sampler.steps_per_epoch())]
    for i in range(8):
        trainer.train_step([batches[i % len(batches)]])
        trainer.step += 1
    assert trainer.validate()["l1"] < before * 0.95


def test_injected_divergence_rolls_back_then_gives_up(corpus, one_shard, tiny_expert, tmp_path):
    cfg = config(corpus, one_shard, tiny_expert, tmp_path, max_steps=8, diverge_threshold=-1.0, diverge_steps=2,
                 max_rollbacks=1)
    trainer = Trainer(cfg)
    with pytest.raises(TalkLipError, match="diverged.*1 rollbacks did not help"):
        trainer.run()
    log = (tmp_path / "talklip.log").read_text()
    assert "rolling back to" in log and "state_step000000000.pt" in log and "(rollback 1)" in log
    assert trainer.rollbacks == 1


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
