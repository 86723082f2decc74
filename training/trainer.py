"""TalkLip training: the objective, the three-stage curriculum, checkpoints, resume and rollback.

Read top to bottom: ``TrainConfig`` (the flags), ``build_models`` (generator initialised from the
expert's encoder, discriminator, frozen expert), ``Objective`` (one forward of the generator's
losses, wrapped in DDP), ``Curriculum`` (the original ``status_manager``), ``Trainer`` (loop,
validation, checkpoints, divergence rollback). ``train.py`` only parses flags and calls ``run``.
"""
import contextlib
import dataclasses
import glob
import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from models.avhubert import load_avhubert
from models.avhubert.model import AVHubertSeq2Seq
from models.avhubert.training import images_to_avhubert, lip_reading_loss
from models.talklip import TalkLip, TalkLipDiscriminator, bce
from training.data import ResumableBatchSampler, TalkLipDataset, collate
from utils.checkpoint import load_checkpoint_file, load_strict, save_atomic
from utils.errors import CheckpointError, TalkLipError

STAGES = ("frozen audio encoder", "audio encoder fine-tuned", "lip-reading expert on", "done")
FINETUNED_LAYERS = 3            # the audio encoder's last three transformer layers (9-11 of BASE)


@dataclass
class TrainConfig:
    file_dir: str
    video_root: str
    audio_root: str
    bbx_root: str
    word_root: str
    avhubert_path: str
    checkpoint_dir: str
    log_name: str = "talklip"
    cont_w: float = 1e-3
    lip_w: float = 1e-5
    perp_w: float = 0.07
    gen_checkpoint_path: Optional[str] = None
    disc_checkpoint_path: Optional[str] = None
    batch_size: int = 8
    num_worker: int = 6
    lr: float = 1e-4
    n_epoch: int = 100
    ckpt_interval: int = 3000
    patience: int = 5
    accum_steps: int = 1
    bf16: bool = False
    seed: int = 0
    keep_last: int = 3
    max_steps: Optional[int] = None
    valid_clips: Optional[int] = None
    windows_per_clip: Optional[int] = None
    diverge_threshold: float = 20.0
    diverge_steps: int = 50
    max_rollbacks: int = 5
    max_oom: int = 10
    device: str = "auto"
    no_progress: bool = False
    tensorboard: bool = True
    start_stage: int = 0


# ------------------------------------------------------------------------------------ models
def build_models(cfg: TrainConfig, device) -> Dict[str, nn.Module]:
    """The frozen expert, a generator whose audio encoder starts from the expert's encoder (only its
    last three layers trainable), and a fresh discriminator."""
    expert = load_avhubert(cfg.avhubert_path)
    if not isinstance(expert, AVHubertSeq2Seq) or expert.codec is None:
        raise CheckpointError(f"{cfg.avhubert_path} is not a seq2seq lip reader with its dictionary: "
                              f"--avhubert_path needs an AV-HuBERT model fine-tuned for lip reading")
    for p in expert.parameters():
        p.requires_grad = False
    enc_cfg = expert.encoder.w2v_model.cfg
    generator = TalkLip(enc_cfg)
    load_strict(generator.audio_encoder, expert.encoder.state_dict(), source=cfg.avhubert_path)
    layers = enc_cfg.encoder_layers
    tuned = tuple(f"w2v_model.encoder.layers.{i}." for i in range(layers - FINETUNED_LAYERS, layers))
    for name, p in generator.audio_encoder.named_parameters():
        p.requires_grad = name.startswith(tuned)
    return {"gen": generator.to(device), "disc": TalkLipDiscriminator().to(device), "expert": expert.to(device).eval()}


class Objective(nn.Module):
    """The generator's loss for one batch; the only module DDP wraps on the generator side. The
    expert and the discriminator are used, not owned (their parameters get no gradient here)."""

    def __init__(self, generator: TalkLip, expert: AVHubertSeq2Seq, disc: TalkLipDiscriminator):
        super().__init__()
        self.gen = generator
        self._frozen = (expert, disc)

    def forward(self, batch: Dict, stage: int, w: Dict[str, float]) -> Dict[str, torch.Tensor]:
        expert, disc = self._frozen
        gen = self.gen
        gen.ft = stage >= 1
        syn, enc_audio = gen(batch["faces_in"], batch["audio"], batch["padding_mask"], batch["audio_index"])
        zero = syn.new_zeros(())
        out = {"syn": syn, "lip": zero, "cont": zero, "perc": zero, "n_correct": zero, "total": zero}
        if stage >= 2 or not gen.training:
            video, vmask = images_to_avhubert([f.to(syn.device) for f in batch["frames"]],
                                              batch["boxes"], syn, batch["picked"], batch["audio"].shape[2])
            res = lip_reading_loss(expert, video, batch["padding_mask"], batch["target"], batch["prev_output_tokens"])
            out.update(lip=res["loss"], n_correct=res["n_correct"], total=res["total"])
            if w["cont_w"] > 0:
                idx = batch["audio_index"]
                vid = res["encoder_out"].transpose(0, 1).reshape(-1, res["encoder_out"].shape[-1])[idx]
                aud = enc_audio.transpose(0, 1).reshape(-1, enc_audio.shape[-1])[idx]
                out["cont"] = gen.sync_net(vid.float(), aud.float())
        if w["perp_w"] > 0:
            out["perc"] = disc.perceptual_loss(syn)
        out["l1"] = F.l1_loss(syn, batch["faces_gt"])
        lip_on = stage >= 2
        out["loss"] = (w["lip_w"] * out["lip"] * lip_on + w["perp_w"] * out["perc"]
                       + (1.0 - w["lip_w"] - w["perp_w"]) * out["l1"] + w["cont_w"] * out["cont"] * lip_on)
        return out


def disc_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> Dict[str, torch.Tensor]:
    r, f = bce(disc(real), 1.0), bce(disc(fake.detach()), 0.0)
    return {"disc_real": r, "disc_fake": f, "disc": r + f}


class Curriculum:
    """The original ``status_manager``: after more than ``patience`` validations without a new
    lowest L1, move to the next stage."""

    def __init__(self, patience: int = 5, stage: int = 0):
        self.best, self.waited, self.stage, self.patience = math.inf, 0, stage, patience

    def update(self, value: float) -> bool:
        if value < self.best:
            self.best, self.waited = value, 0
        else:
            self.waited += 1
        if self.waited > self.patience:
            self.stage, self.waited = self.stage + 1, 0
            return True
        return False

    def state_dict(self):
        return {"best": self.best, "waited": self.waited, "stage": self.stage}

    def load_state_dict(self, s):
        self.best, self.waited, self.stage = s["best"], s["waited"], s["stage"]


# ------------------------------------------------------------------------------------ distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_spec: str) -> Tuple[Dist, torch.device]:
    """torchrun's RANK/WORLD_SIZE/LOCAL_RANK -> process group (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_spec != "cpu"
    device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local), device


def _micro_seed(*parts) -> int:
    return int(np.random.default_rng(list(parts)).integers(0, 2 ** 62))


# ------------------------------------------------------------------------------------ trainer
class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.dist, self.device = init_distributed(cfg.device)
        torch.manual_seed(cfg.seed)                  # the same initial weights in every process and run
        m = build_models(cfg, self.device)           # bad inputs fail here, before anything is written
        os.makedirs(cfg.checkpoint_dir, exist_ok=True)
        self.log = self._logger()
        self.gen, self.disc, self.expert = m["gen"], m["disc"], m["expert"]
        self.objective = Objective(self.gen, self.expert, self.disc)
        self.opt_g = torch.optim.Adam([p for p in self.gen.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        self.curriculum = Curriculum(cfg.patience, cfg.start_stage)
        self.step, self.epoch, self.epoch_step, self.rollbacks = 0, 0, 0, 0
        self.ooms, self.high_disc, self.last_good = 0, 0, None
        codec = self.expert.codec
        common = dict(file_dir=cfg.file_dir, video_root=cfg.video_root, audio_root=cfg.audio_root,
                      bbx_root=cfg.bbx_root, word_root=cfg.word_root, codec=codec, seed=cfg.seed)
        self.train_set = TalkLipDataset("train", windows_per_clip=cfg.windows_per_clip, **common)
        self.valid_set = TalkLipDataset("valid", **common)
        if cfg.valid_clips:
            self.valid_set.names = self.valid_set.names[:cfg.valid_clips]
        self.sampler = ResumableBatchSampler(len(self.train_set), cfg.batch_size, self.dist.world, self.dist.rank,
                                             cfg.accum_steps, cfg.seed)
        self._wrap()
        self.tb = self._tensorboard()

    # ---- set-up helpers
    def _logger(self):
        log = logging.getLogger(f"talklip.train.{self.cfg.log_name}")
        log.setLevel(logging.INFO)
        log.handlers.clear()
        if self.dist.main:
            handler = logging.FileHandler(os.path.join(self.cfg.checkpoint_dir, f"{self.cfg.log_name}.log"))
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            log.addHandler(handler)
        log.propagate = False
        return log

    def _tensorboard(self):
        if not (self.dist.main and self.cfg.tensorboard):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.note("TensorBoard is not installed (pip install tensorboard); logging to the text log only")
            return None
        return SummaryWriter(os.path.join(self.cfg.checkpoint_dir, "tb"))

    def _wrap(self):
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.objective_ddp = nn.parallel.DistributedDataParallel(self.objective, device_ids=ids,
                                                                     find_unused_parameters=True)
            self.disc_ddp = nn.parallel.DistributedDataParallel(self.disc, device_ids=ids)
        else:
            self.objective_ddp, self.disc_ddp = self.objective, self.disc

    def note(self, text: str):
        if self.dist.main:
            tqdm.write(text)
            self.log.info(text)

    @property
    def stage(self) -> int:
        return self.curriculum.stage

    def weights(self) -> Dict[str, float]:
        c = self.cfg
        return {"lip_w": c.lip_w, "perp_w": c.perp_w, "cont_w": c.cont_w}

    def autocast(self):
        enabled = self.cfg.bf16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def to_device(self, batch: Dict) -> Dict:
        return {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    # ---- one optimisation step (accum_steps micro-batches on this process)
    def train_step(self, micro_batches: List[Dict]) -> Dict[str, float]:
        cfg, w = self.cfg, self.weights()
        self.objective.train()
        self.disc.train()
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        logs: Dict[str, float] = {}
        outs = []
        for a, batch in enumerate(micro_batches):
            index = a * self.dist.world + self.dist.rank
            torch.manual_seed(_micro_seed(cfg.seed, self.step, index, self.rollbacks))
            sync = a == len(micro_batches) - 1
            ctx = self.objective_ddp.no_sync() if (self.dist.world > 1 and not sync) else contextlib.nullcontext()
            for p in self.disc.parameters():
                p.requires_grad = False           # the perceptual loss trains the generator only
            with ctx, self.autocast():
                out = self.objective_ddp(batch, self.stage, w)
                (out["loss"] / len(micro_batches)).backward()
            for p in self.disc.parameters():
                p.requires_grad = True
            outs.append(out["syn"].detach())
            for k in ("loss", "l1", "perc", "lip", "cont"):
                logs[k] = logs.get(k, 0.0) + float(out[k].detach()) / len(micro_batches)
        self.opt_g.step()
        for a, (batch, syn) in enumerate(zip(micro_batches, outs)):
            sync = a == len(micro_batches) - 1
            ctx = self.disc_ddp.no_sync() if (self.dist.world > 1 and not sync) else contextlib.nullcontext()
            with ctx, self.autocast():
                d = disc_loss(self.disc_ddp, batch["faces_gt"], syn)
                (d["disc"] / len(micro_batches)).backward()
            for k in ("disc_real", "disc_fake", "disc"):
                logs[k] = logs.get(k, 0.0) + float(d[k].detach()) / len(micro_batches)
        self.opt_d.step()
        self.last_samples = (micro_batches[0]["faces_in"], outs[0], micro_batches[0]["faces_gt"])
        return logs

    # ---- validation
    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        self.objective.eval()
        self.disc.eval()
        sums: Dict[str, float] = {}
        n_correct = total = 0
        loader = torch.utils.data.DataLoader(self.valid_set, batch_size=self.cfg.batch_size, collate_fn=collate,
                                             num_workers=min(self.cfg.num_worker, 2))
        steps = 0
        for batch in loader:
            batch = self.to_device(batch)
            torch.manual_seed(_micro_seed(self.cfg.seed, 10 ** 9, steps))
            with self.autocast():
                out = self.objective(batch, self.stage, self.weights())
                d = disc_loss(self.disc, batch["faces_gt"], out["syn"])
            for k, v in {**out, **d}.items():
                if k not in ("syn", "n_correct", "total"):
                    sums[k] = sums.get(k, 0.0) + float(v)
            n_correct += int(out["n_correct"])
            total += int(out["total"])
            steps += 1
        result = {k: v / max(1, steps) for k, v in sums.items()}
        result["l1_sum"] = sums.get("l1", 0.0)
        result["wer"] = 1.0 - n_correct / max(1, total)      # the original's token error of the expert
        return result

    # ---- checkpoints
    def state_path(self, step: int) -> str:
        return os.path.join(self.cfg.checkpoint_dir, f"state_step{step:09d}.pt")

    def save(self):
        """Original-format generator and disc_ files, plus the resume state; keep the last K."""
        if not self.dist.main:
            return
        d, s = self.cfg.checkpoint_dir, self.step
        enc = dataclasses.asdict(self.gen.audio_encoder.w2v_model.cfg)
        save_atomic({"state_dict": self.gen.state_dict(), "optimizer": self.opt_g.state_dict(), "global_step": s,
                     "global_epoch": self.epoch, "audio_encoder_cfg": enc}, os.path.join(d, f"checkpoint_step{s:09d}.pth"))
        save_atomic({"state_dict": self.disc.state_dict(), "optimizer": self.opt_d.state_dict(), "global_step": s,
                     "global_epoch": self.epoch}, os.path.join(d, f"disc_checkpoint_step{s:09d}.pth"))
        save_atomic({"gen": self.gen.state_dict(), "disc": self.disc.state_dict(), "opt_g": self.opt_g.state_dict(),
                     "opt_d": self.opt_d.state_dict(), "curriculum": self.curriculum.state_dict(), "step": s,
                     "epoch": self.epoch, "epoch_step": self.epoch_step, "rollbacks": self.rollbacks,
                     "ooms": self.ooms, "config": dataclasses.asdict(self.cfg),
                     "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}}, self.state_path(s))
        for pattern in ("checkpoint_step*.pth", "disc_checkpoint_step*.pth", "state_step*.pt"):
            files = sorted(glob.glob(os.path.join(d, pattern)))      # glob skips the .tmp dot-files
            for old in files[:-self.cfg.keep_last]:
                os.remove(old)
        self.note(f"saved step {s}: {d}/checkpoint_step{s:09d}.pth (+ disc_, state_)")

    def latest_state(self, before: Optional[int] = None) -> Optional[str]:
        files = sorted(glob.glob(os.path.join(self.cfg.checkpoint_dir, "state_step*.pt")))
        steps = [(int(re.search(r"state_step(\d+)", f).group(1)), f) for f in files]
        steps = [(s, f) for s, f in steps if before is None or s < before]
        return steps[-1][1] if steps else None

    def resume(self, path: str):
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.gen.load_state_dict(state["gen"])
        self.disc.load_state_dict(state["disc"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.curriculum.load_state_dict(state["curriculum"])
        self.step, self.epoch, self.epoch_step = state["step"], state["epoch"], state["epoch_step"]
        self.rollbacks, self.ooms = state["rollbacks"], state.get("ooms", 0)
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        self.note(f"resumed from {path}: step {self.step}, epoch {self.epoch}, stage {self.stage} ({STAGES[self.stage]})")

    def load_original(self):
        """--gen_checkpoint_path / --disc_checkpoint_path in the original format (weights, optimizer, step)."""
        for path, model, opt, is_gen in ((self.cfg.gen_checkpoint_path, self.gen, self.opt_g, True),
                                         (self.cfg.disc_checkpoint_path, self.disc, self.opt_d, False)):
            if not path:
                continue
            state, meta = load_checkpoint_file(path, what="TalkLip checkpoint")
            load_strict(model, state, source=path)
            if meta.get("optimizer"):
                try:
                    opt.load_state_dict(meta["optimizer"])
                except (ValueError, KeyError):
                    self.note(f"{path}: optimizer state does not fit (different trainable set); starting it fresh")
            if is_gen and meta.get("global_step"):
                self.step = int(meta["global_step"])
            self.note(f"loaded {path}")

    # ---- divergence
    def diverged(self, logs: Dict[str, float]) -> bool:
        if not all(math.isfinite(v) for v in logs.values()):
            return True
        self.high_disc = self.high_disc + 1 if logs["disc"] > self.cfg.diverge_threshold else 0
        return self.high_disc >= self.cfg.diverge_steps

    def rollback(self, logs: Dict[str, float]):
        start = self.step - self.high_disc
        path = self.latest_state(before=start + 1)
        if path is None or self.rollbacks >= self.cfg.max_rollbacks:
            raise TalkLipError(f"training diverged at step {self.step} (losses {fmt(logs)}) and "
                               + ("no earlier checkpoint exists" if path is None else
                                  f"{self.rollbacks} rollbacks did not help")
                               + ": lower --lr or raise --ckpt_interval frequency, then resume")
        rollbacks = self.rollbacks + 1
        self.note(f"divergence at step {self.step} (losses {fmt(logs)}): rolling back to {path} "
                  f"(rollback {rollbacks}), with a new data order")
        self.resume(path)
        self.rollbacks = rollbacks
        self.high_disc = 0

    # ---- logging
    def log_scalars(self, prefix: str, values: Dict[str, float]):
        if self.tb is None:
            return
        for k, v in values.items():
            self.tb.add_scalar(f"{prefix}/{k}", v, self.step)
        self.tb.add_scalar("train/lr", self.opt_g.param_groups[0]["lr"], self.step)
        self.tb.add_scalar("train/stage", self.stage, self.step)

    def save_samples(self):
        """reference | masked | generated | ground truth, as the original's sample images."""
        if not self.dist.main or not hasattr(self, "last_samples"):
            return
        import cv2
        x, g, gt = (t.detach().float().cpu().clamp(0, 1) for t in self.last_samples)
        grid = torch.cat([x[:, 3:], x[:, :3], g, gt], dim=3)            # (N, 3, 96, 4*96)
        folder = os.path.join(self.cfg.checkpoint_dir, f"samples_step{self.step:09d}")
        os.makedirs(folder, exist_ok=True)
        for i, img in enumerate(grid[:16]):
            cv2.imwrite(os.path.join(folder, f"{i}.jpg"), (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        if self.tb is not None:
            self.tb.add_images("samples", grid[:8].flip(1), self.step)     # BGR -> RGB

    # ---- the loop
    def loader(self):
        self.sampler.set_epoch(self.epoch, self.rollbacks, self.epoch_step)
        self.train_set.set_epoch(self.epoch, self.rollbacks)
        return torch.utils.data.DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=collate,
                                           num_workers=self.cfg.num_worker, persistent_workers=False)

    def run(self) -> Dict:
        cfg = self.cfg
        latest = self.latest_state()
        if latest:
            self.resume(latest)
        else:
            self.load_original()
            self.save()                      # a rollback target from before the first step
        self.note(f"training on {self.device} x{self.dist.world}: {len(self.train_set)} train / "
                  f"{len(self.valid_set)} valid clips, stage {self.stage} ({STAGES[self.stage]})")
        history = []
        started = time.time()
        while self.epoch < cfg.n_epoch and self.stage < 3:
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                break
            bar = tqdm(total=self.sampler.steps_per_epoch(), initial=self.epoch_step, disable=cfg.no_progress or not self.dist.main,
                       desc=f"epoch {self.epoch}", unit="step")
            it = iter(self.loader())
            restart = False
            while True:
                micro = []
                try:
                    for _ in range(cfg.accum_steps):
                        micro.append(self.to_device(next(it)))
                except StopIteration:
                    break
                try:
                    logs = self.train_step(micro)
                    self.ooms = 0
                except torch.OutOfMemoryError:
                    del micro
                    self.opt_g.zero_grad(set_to_none=True)
                    self.opt_d.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
                    self.ooms += 1
                    self.note(f"step {self.step}: out of memory, step skipped ({self.ooms} in a row)")
                    if self.ooms >= cfg.max_oom or self.dist.world > 1:
                        raise TalkLipError(f"out of memory {self.ooms} times in a row at batch {cfg.batch_size}: "
                                           f"use a smaller --batch_size with --accum_steps to keep the batch, "
                                           f"or --bf16") from None
                    logs = None
                self.step += 1
                self.epoch_step += 1
                bar.update(1)
                if logs is not None:
                    bar.set_postfix_str(fmt(logs, ("l1", "perc", "lip", "disc")))
                    self.log_scalars("train", logs)
                    if self.diverged(logs):
                        self.rollback(logs)
                        restart = True
                        break
                if self.step % cfg.ckpt_interval == 0:
                    self.save_samples()
                    self.evaluate(history)
                    self.save()                        # after the curriculum moved: resume sees it
                    if self.stage >= 3:
                        break
                elif self.step == 1:
                    self.save()
                if cfg.max_steps is not None and self.step >= cfg.max_steps:
                    break
            bar.close()
            if restart:
                continue
            if self.stage >= 3 or (cfg.max_steps is not None and self.step >= cfg.max_steps):
                break
            self.epoch += 1
            self.epoch_step = 0
        if self.stage >= 3:
            self.note("training done: the validation L1 stopped improving in the last stage")
        self.save()
        summary = {"step": self.step, "epoch": self.epoch, "stage": self.stage, "stage_name": STAGES[self.stage],
                   "rollbacks": self.rollbacks, "seconds": round(time.time() - started, 1), "history": history,
                   "checkpoint": os.path.join(cfg.checkpoint_dir, f"checkpoint_step{self.step:09d}.pth")}
        if self.dist.main:
            with open(os.path.join(cfg.checkpoint_dir, "train_summary.json"), "w") as h:
                json.dump(summary, h, indent=1)
        if self.tb is not None:
            self.tb.close()
        return summary

    def evaluate(self, history: list) -> bool:
        """Validate (rank 0), share the L1 with every process, advance the curriculum."""
        value = torch.zeros(1)
        if self.dist.main:
            val = self.validate()
            self.note(f"valid step {self.step} stage {self.stage}: {fmt(val)}")
            self.log_scalars("valid", val)
            history.append({"step": self.step, "stage": self.stage, **val})
            value[0] = val["l1_sum"]
        if self.dist.world > 1:
            dist.broadcast(value, 0)
        before = self.stage
        changed = self.curriculum.update(float(value[0]))
        if changed:
            self.note(f"step {self.step}: stage {before} -> {self.stage} ({STAGES[self.stage]})")
        return changed


def fmt(values: Dict[str, float], keys=None) -> str:
    keys = keys or [k for k in values if k != "l1_sum"]
    return " ".join(f"{k} {values[k]:.4f}" for k in keys if k in values)
