"""TalkLip training: the loop.

Read top to bottom: ``build_models`` (generator initialised from the expert's encoder,
discriminator, frozen expert), ``Trainer`` (set-up, ``run``: the loop, then its helpers: one step,
validation, checkpoints, resume, divergence rollback, logging). Elsewhere, one home each: the
options and their defaults in ``training.config`` (``train.py`` builds its parser from them), the
stages and what each trains in ``training.curriculum``, the losses in ``training.objective``, the
checkpoint files in ``training.checkpoints``.
"""
import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from face_detection.framing import read_framing
from models.avhubert import freeze_all_but, load_lip_reader
from models.avhubert.ensemble import ExpertEnsemble
from models.presets import talklip_preset
from models.talklip import TalkLip, TalkLipDiscriminator, to_channels_last
from training import checkpoints
from training.data import ResumableBatchSampler, TalkLipDataset, check_inputs, check_lengths, collate
from training.labels import NONE, TRANSCRIPT, clip_labels, label_counts
from training.mouth_augment import CropAugment
from training.config import TrainConfig
from training.curriculum import DONE, FINETUNED_LAYERS, STAGES, Curriculum, stage_plan
from training.objective import Objective, disc_loss
from training.run_state import RunState
from utils.checkpoint import load_checkpoint_file, load_strict
from utils.device import has_native_bf16, resolve_device
from utils.errors import MediaError, TalkLipError
from utils.fileio import read_filelist

WARMDOWN_FLOOR = 0.1            # --lr_warmdown ends at this fraction of the learning rates


# ------------------------------------------------------------------------------------ models
def build_models(cfg: TrainConfig, device) -> Dict[str, nn.Module]:
    """The frozen expert (with ``--lip_ensemble``, an ExpertEnsemble led by it), a generator
    (``cfg.generator_preset`` widths) whose audio encoder starts from the expert's encoder with only its
    last three layers trainable, and a fresh discriminator."""
    expert = load_lip_reader(cfg.avhubert_path, "--avhubert_path needs an AV-HuBERT model fine-tuned for lip reading")
    expert.requires_grad_(False)
    enc_cfg = expert.encoder.w2v_model.cfg
    widths = talklip_preset(cfg.generator_preset)
    generator = TalkLip(enc_cfg, widths)
    load_strict(generator.audio_encoder, expert.encoder.state_dict(), source=cfg.avhubert_path)
    layers = enc_cfg.encoder_layers
    freeze_all_but(generator.audio_encoder, encoder_layers=range(max(0, layers - FINETUNED_LAYERS), layers))
    disc = TalkLipDiscriminator(widths).init_for_training()
    if cfg.lip_ensemble:
        members = [load_lip_reader(p, "--lip_ensemble needs lip readers as train_expert.py writes them")
                   for p in cfg.lip_ensemble]
        expert = ExpertEnsemble([expert] + members, [cfg.avhubert_path, *cfg.lip_ensemble]).requires_grad_(False)
    return {"gen": to_channels_last(generator.to(device)), "disc": to_channels_last(disc.to(device)),
            "expert": expert.to(device).eval()}


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
    device = resolve_device(device_spec)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local), device


def warmdown_scale(step: int, max_steps: Optional[int], warmdown: int, hold: int = 0) -> float:
    """Learning-rate factor for the step after ``step`` steps: 1, then over the ``warmdown`` steps that
    end ``hold`` steps before ``max_steps`` falling linearly to WARMDOWN_FLOOR (reached at the warm-down's
    last step), held there for the ``hold`` steps after it."""
    if not warmdown:
        return 1.0
    into = step + 1 - (max_steps - hold - warmdown)   # 1..warmdown inside the warm-down
    return 1.0 - (1.0 - WARMDOWN_FLOOR) * min(1.0, max(0.0, into / warmdown))


def _micro_seed(*parts) -> int:
    return int(np.random.default_rng(list(parts)).integers(0, 2 ** 62))


@dataclass
class Optimizers:
    gen: torch.optim.Optimizer
    disc: torch.optim.Optimizer

    def zero_grad(self):
        self.gen.zero_grad(set_to_none=True)
        self.disc.zero_grad(set_to_none=True)


@dataclass
class TrainData:
    """The clips a run trains and validates on, their lip targets, and the order of the training batches."""
    labels: Dict[str, Tuple[str, str]]
    train_set: TalkLipDataset
    valid_set: TalkLipDataset
    sampler: ResumableBatchSampler


@dataclass
class Parallel:
    """The objective and the discriminator as the step runs them: DDP-wrapped with several processes."""
    objective: nn.Module
    disc: nn.Module


@dataclass
class StepResult:
    """What one optimisation step produced: its losses, and one micro-batch's faces for the sample images."""
    logs: Dict[str, float]
    samples: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]    # (generator input, generated, ground truth)


UNK_NOTE = 0.02          # a share of <unk> target pieces above this is said (above training.expert.UNK_SHARE: refused)


# ------------------------------------------------------------------------------------ trainer
class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.dist, self.device = init_distributed(cfg.device)
        train_names = read_filelist(os.path.join(cfg.file_dir, "train.txt"))
        valid_names = read_filelist(os.path.join(cfg.file_dir, "valid.txt"))[:cfg.valid_clips or None]
        check_inputs(train_names + valid_names, cfg.video_root, cfg.audio_root, cfg.bbx_root, cfg.word_root)
        train_names = check_lengths(train_names, cfg.audio_root, cfg.bbx_root, cfg.max_audio_gap)
        valid_names = check_lengths(valid_names, cfg.audio_root, cfg.bbx_root, cfg.max_audio_gap)
        if not train_names or not valid_names:
            raise MediaError(f"every {'training' if not train_names else 'validation'} clip's audio is more than "
                             f"--max_audio_gap {cfg.max_audio_gap:g} s shorter than its video: rerun preprocess.sh, "
                             f"or raise the flag")
        torch.manual_seed(cfg.seed)                  # the same initial weights in every process and run
        m = build_models(cfg, self.device)           # bad inputs fail here, before anything is written
        self.expert_sha256 = checkpoints.file_sha256(cfg.avhubert_path)
        # how the training boxes crop the face against the detector's box where it dubs (preparation.grid measures
        # it; face_detection.framing): saved with the generator so that a dub frames faces as they were learnt
        self.face_framing = read_framing(cfg.bbx_root)
        # the generator, the frozen expert and the discriminator live in the objective (``gen``, ``expert``, ``disc``)
        self.objective = Objective(m["gen"], m["expert"], m["disc"], cfg.lip_augment,
                                   CropAugment(noise_std=cfg.lip_augment_noise, shift_px=cfg.lip_augment_shift))
        self.optim = Optimizers(
            torch.optim.Adam([p for p in self.gen.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.5, 0.999)),
            torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr or cfg.lr, betas=(0.5, 0.999)))
        if cfg.lr_warmdown and cfg.max_steps is None:
            raise TalkLipError("--lr_warmdown counts back from --max_steps: give --max_steps too")
        if cfg.lr_hold and not cfg.lr_warmdown:
            raise TalkLipError("--lr_hold holds the end of --lr_warmdown: give --lr_warmdown too")
        self.curriculum = Curriculum(cfg.patience, cfg.start_stage, cfg.stage_min_steps, cfg.stage_max_steps)
        self.state = RunState()                      # the run's progress: saved and restored whole
        self.saved_step: Optional[int] = None        # the step whose files were written last
        checkpoints.prepare_folder(cfg.checkpoint_dir)
        self.log = self._logger()
        if cfg.bf16 and not has_native_bf16(self.device):
            self.note(f"warning: --bf16 on {self.device}, which has no bf16 instructions: emulated, slower than fp32")
        self.data = self._data(train_names, valid_names)
        self.parallel = self._wrap()
        self.tb = self._tensorboard()
        self._batches = None                         # this epoch's batch iterator, made when needed

    # ---- the loop
    def run(self) -> Dict:
        """Train until the curriculum is done, ``max_steps`` or ``n_epoch``; resume first if a state exists."""
        self.start()
        started = time.time()
        bar = tqdm(total=self.total_steps(), initial=self.state.step, unit="step", desc="train",
                   disable=self.cfg.no_progress or not self.dist.main)
        while not self.finished():
            result = self.train_step_or_skip(self.next_micro_batches())
            self.count_step()
            if result is not None and self.diverged(result.logs):
                self.rollback(result.logs)
                bar.n = self.state.step
                continue
            self.after_step(result)
            bar.update(1)
            if result is not None:
                bar.set_postfix_str(fmt(result.logs, ("l1", "perc", "lip", "disc")))
        bar.close()
        return self.finish(time.time() - started)

    def note(self, text: str):
        if self.dist.main:
            tqdm.write(text)
            self.log.info(text)

    gen = property(lambda self: self.objective.gen)
    disc = property(lambda self: self.objective.disc)
    expert = property(lambda self: self.objective.expert)

    @property
    def stage(self) -> int:
        return self.curriculum.stage

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def to_device(self, batch: Dict) -> Dict:
        return {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    def start(self):
        """Resume from the newest readable state, or load --gen/--disc_checkpoint_path and save step 0
        (the first rollback target)."""
        found = checkpoints.newest_state(self.cfg.checkpoint_dir, warn=self.note)
        if found:
            self.resume(*found)
        elif self.cfg.branch_from:
            self.branch(self.cfg.branch_from)
        else:
            self.load_original()
            self.save()
        self.note(f"training on {self.device} x{self.dist.world}: {len(self.data.train_set)} train / "
                  f"{len(self.data.valid_set)} valid clips, stage {self.stage} ({STAGES[self.stage]})")
        if stage_plan(self.stage).expert_losses:
            self.warn_unlabelled()

    def warn_unlabelled(self):
        """Say when the lip loss begins (stage 2) with training clips that have no lip target."""
        without = [n for n in self.data.train_set.names if self.data.labels[n][0] == NONE]
        if without and not self.cfg.no_lip_loss:
            self.note(f"warning: the lip loss starts with {len(without)} of {len(self.data.train_set)} training clips "
                      f"lacking a transcript or pseudo-label (e.g. {without[0]}): they train without it")

    def finished(self) -> bool:
        cfg = self.cfg
        return (self.stage >= DONE or self.state.epoch >= cfg.n_epoch
                or (cfg.max_steps is not None and self.state.step >= cfg.max_steps))

    def total_steps(self) -> int:
        total = self.cfg.n_epoch * self.data.sampler.steps_per_epoch()
        return min(total, self.cfg.max_steps) if self.cfg.max_steps is not None else total

    def next_micro_batches(self) -> List[Dict]:
        """The next step's ``accum_steps`` micro-batches of this process (the sampler's epochs hold
        whole steps, so an epoch never ends inside one)."""
        if self._batches is None:
            data, run = self.data, self.state
            self.note(f"epoch {run.epoch}: {len(data.train_set)} train clips, "
                      f"{label_counts(data.labels, data.train_set.names)}"
                      + (" (--no_lip_loss: no lip loss)" if self.cfg.no_lip_loss else ""))
            data.sampler.set_epoch(run.epoch, run.rollbacks, run.epoch_step)
            data.train_set.set_epoch(run.epoch, run.rollbacks)
            self._batches = iter(torch.utils.data.DataLoader(data.train_set, batch_sampler=data.sampler,
                                                             collate_fn=collate, num_workers=self.cfg.num_worker))
        return [self.to_device(next(self._batches)) for _ in range(self.cfg.accum_steps)]

    def train_step_or_skip(self, micro: List[Dict]) -> Optional[StepResult]:
        """One step; None when it ran out of memory (skipped; too many in a row stop the run)."""
        run = self.state
        try:
            result = self.train_step(micro)
        except torch.OutOfMemoryError:
            del micro
            self.optim.zero_grad()
            torch.cuda.empty_cache()
            run.ooms += 1
            self.note(f"step {run.step}: out of memory, step skipped ({run.ooms} in a row)")
            if run.ooms >= self.cfg.max_oom or self.dist.world > 1:
                raise TalkLipError(f"out of memory {run.ooms} times in a row at batch {self.cfg.batch_size}: "
                                   f"use a smaller --batch_size with --accum_steps to keep the batch, "
                                   f"or --bf16") from None
            return None
        run.ooms = 0
        if all(math.isfinite(v) for v in result.logs.values()):
            run.count_disc(result.logs["disc"], self.cfg.diverge_threshold)
        return result

    def count_step(self):
        """The step just taken (or skipped) counts: ``state.step`` is the number of steps taken."""
        if self.state.count_step(self.data.sampler.steps_per_epoch()):
            self._batches = None

    def after_step(self, result: Optional[StepResult]):
        """Log the step just counted; every ``ckpt_interval`` steps validate and save; move the curriculum."""
        run = self.state
        if result is not None:
            self.log_scalars("train", result.logs)
            run.recent.append(result.logs)
        if run.step % self.cfg.log_interval == 0 and run.recent:
            mean = {k: float(np.mean([r[k] for r in run.recent])) for k in run.recent[0]}
            self.note(f"step {run.step} stage {self.stage}: {fmt(mean)} (mean of {len(run.recent)} steps)")
            run.train_log.append({"step": run.step, "stage": self.stage, **mean})
            run.recent = []
        validate = run.step % self.cfg.ckpt_interval == 0
        first = self.stage
        if validate:
            if result is not None:
                self.save_samples(result.samples)
            self.validate_and_advance()
        before = self.stage
        if self.curriculum.stepped(run.step):
            self.note(f"step {run.step}: stage {before} -> {self.stage} ({STAGES[self.stage]}), "
                      f"after {self.cfg.stage_max_steps[before]} steps (--stage_max_steps)")
        if self.stage != first and stage_plan(self.stage).expert_losses and not stage_plan(first).expert_losses:
            self.warn_unlabelled()
        if validate or self.stage != first:
            self.save()        # after the curriculum moved: a resume, or a branch, starts the new stage here

    def finish(self, seconds: float) -> Dict:
        if self.stage >= DONE:
            self.note("training done: the last stage ended")
        run = self.state
        if self.saved_step != run.step:               # the last step may have been saved already
            self.save()
        summary = {"step": run.step, "epoch": run.epoch, "stage": self.stage, "stage_name": STAGES[self.stage],
                   "precision": "bf16" if self.cfg.bf16 else "fp32",
                   "rollbacks": run.rollbacks, "seconds": round(seconds, 1), "history": run.history,
                   "train_log": run.train_log,
                   "checkpoint": os.path.join(self.cfg.checkpoint_dir, checkpoints.GENERATOR_FILE.format(run.step))}
        if self.dist.main:
            with open(os.path.join(self.cfg.checkpoint_dir, "train_summary.json"), "w") as h:
                json.dump(summary, h, indent=1)
        if self.tb is not None:
            self.tb.close()
        return summary

    # ---- one optimisation step (accum_steps micro-batches on this process)
    def train_step(self, micro_batches: List[Dict]) -> StepResult:
        w, plan, step = self.cfg.weights, stage_plan(self.stage), self.state.step
        scale = warmdown_scale(step, self.cfg.max_steps, self.cfg.lr_warmdown, self.cfg.lr_hold)
        for opt, lr in ((self.optim.gen, self.cfg.lr), (self.optim.disc, self.cfg.disc_lr or self.cfg.lr)):
            for group in opt.param_groups:
                group["lr"] = lr * scale
        self.objective.train()
        self.disc.train()
        self.optim.zero_grad()
        logs: Dict[str, float] = {}
        outs = []
        n = len(micro_batches)
        for a, batch in enumerate(micro_batches):
            torch.manual_seed(_micro_seed(self.cfg.seed, step, a * self.dist.world + self.dist.rank,
                                          self.state.rollbacks))
            last = a == n - 1
            ctx = self.parallel.objective.no_sync() if (self.dist.world > 1 and not last) else contextlib.nullcontext()
            with ctx, self.autocast():
                out = self.parallel.objective(batch, plan, w)
                (out["loss"] / n).backward()
            outs.append(out["syn"].detach())
            for k in self.cfg.logged_losses:
                logs[k] = logs.get(k, 0.0) + float(out[k].detach()) / n
        self.optim.gen.step()
        for a, (batch, syn) in enumerate(zip(micro_batches, outs)):
            last = a == n - 1
            ctx = self.parallel.disc.no_sync() if (self.dist.world > 1 and not last) else contextlib.nullcontext()
            with ctx, self.autocast():
                d = disc_loss(self.parallel.disc, batch["faces_gt"], syn)
                (d["disc"] / n).backward()
            for k in ("disc_real", "disc_fake", "disc", "disc_acc"):
                logs[k] = logs.get(k, 0.0) + float(d[k].detach()) / n
        self.optim.disc.step()
        return StepResult(logs, (micro_batches[0]["faces_in"], outs[0], micro_batches[0]["faces_gt"]))

    # ---- validation
    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        self.objective.eval()
        self.disc.eval()
        sums: Dict[str, float] = {}
        n_correct = total = 0
        loader = torch.utils.data.DataLoader(self.data.valid_set, batch_size=self.cfg.batch_size, collate_fn=collate,
                                             num_workers=min(self.cfg.num_worker, 2))
        steps = 0
        for batch in loader:
            batch = self.to_device(batch)
            torch.manual_seed(_micro_seed(self.cfg.seed, 10 ** 9, steps))
            with self.autocast():
                out = self.objective(batch, stage_plan(self.stage), self.cfg.weights)
                d = disc_loss(self.disc, batch["faces_gt"], out["syn"])
            for k, v in {**out, **d}.items():
                if k not in ("syn", "n_correct", "total"):
                    sums[k] = sums.get(k, 0.0) + float(v)
            n_correct += int(out["n_correct"])
            total += int(out["total"])
            steps += 1
        result = {k: v / max(1, steps) for k, v in sums.items()}
        result["l1_sum"] = sums.get("l1", 0.0)
        if self.cfg.no_lip_loss:
            result.pop("lip", None)
        elif total:
            result["token_acc"] = n_correct / total
            result["wer"] = 1.0 - result["token_acc"]       # the original's "wer": the expert's token error
        return result

    def validate_and_advance(self) -> bool:
        """Validate (rank 0), share the L1 with every process, advance the curriculum on a plateau."""
        value = torch.zeros(1)
        if self.dist.main:
            val = self.validate()
            self.note(f"valid step {self.state.step} stage {self.stage}: {fmt(val)}")
            self.log_scalars("valid", val)
            self.state.history.append({"step": self.state.step, "stage": self.stage, **val})
            value[0] = val["l1_sum"]
        if self.dist.world > 1:
            dist.broadcast(value, 0)
        before = self.stage
        changed = self.curriculum.validated(float(value[0]), self.state.step)
        if changed:
            self.note(f"step {self.state.step}: stage {before} -> {self.stage} ({STAGES[self.stage]}), "
                      f"validation L1 stopped improving")
        return changed

    # ---- checkpoints
    def resume_config(self) -> Dict:
        """What a state records about the run, for check_resume."""
        return {**dataclasses.asdict(self.cfg), "world": self.dist.world, "expert_sha256": self.expert_sha256}

    def save(self):
        """Original-format generator and disc_ files, plus the resume state; keep the last K."""
        if not self.dist.main:
            return
        run, widths = self.state, self.gen.config.to_dict()
        common = {"global_step": run.step, "global_epoch": run.epoch, "talklip_cfg": widths}
        state = {"gen": self.gen.state_dict(), "disc": self.disc.state_dict(), "opt_g": self.optim.gen.state_dict(),
                 "opt_d": self.optim.disc.state_dict(), "curriculum": self.curriculum.state_dict(),
                 "run": run.to_dict(), "config": self.resume_config(), "rng": checkpoints.rng_state()}
        path = checkpoints.write_step(
            self.cfg.checkpoint_dir, run.step,
            {"state_dict": self.gen.state_dict(), "optimizer": self.optim.gen.state_dict(), **common,
             "audio_encoder_cfg": dataclasses.asdict(self.gen.audio_encoder.w2v_model.cfg),
             **({"face_framing": self.face_framing} if self.face_framing else {})},
            {"state_dict": self.disc.state_dict(), "optimizer": self.optim.disc.state_dict(), **common},
            state, self.cfg.keep_last)
        self.saved_step = run.step
        self.note(f"saved step {run.step}: {path} (+ disc_, state_)")

    def resume(self, path: str, state: Dict):
        checkpoints.check_resume(state["config"], self.resume_config(), path, self.cfg.resume_anyway, warn=self.note)
        self.gen.load_state_dict(state["gen"])
        self.disc.load_state_dict(state["disc"])
        self.optim.gen.load_state_dict(state["opt_g"])
        self.optim.disc.load_state_dict(state["opt_d"])
        self.curriculum.load_state_dict(state["curriculum"])
        run = self.state = RunState.from_state(state)
        self.saved_step = run.step
        stored, sampler = state["config"], self.data.sampler
        stored_batch = stored["batch_size"] * stored.get("world", 1) * stored["accum_steps"]
        if stored_batch != sampler.global_batch:         # --resume_anyway with another batch: same samples seen
            run.epoch_step = -(-run.epoch_step * stored_batch // sampler.global_batch)
            if run.epoch_step >= sampler.steps_per_epoch():
                run.epoch, run.epoch_step = run.epoch + 1, 0
        checkpoints.set_rng_state(state["rng"])
        self._batches = None
        self.note(f"resumed from {path}: step {run.step}, epoch {run.epoch}, stage {self.stage} ({STAGES[self.stage]})")

    def branch(self, path: str):
        """Start from another run's state (--branch_from) and save it here, so a rerun resumes in this
        folder. The settings RESUME_MUST_MATCH names are checked as for a resume; the others that differ
        are logged, since the steps before the branch were taken with the other run's."""
        state = checkpoints.load_state(path)
        stored, current = state["config"], self.resume_config()
        unlogged = {"checkpoint_dir", "branch_from", "log_name", "no_progress", "tensorboard", "keep_last"}
        differ = [f"{key} {stored.get(key)!r} -> {value!r}" for key, value in current.items()
                  if key not in unlogged and stored.get(key) != value]
        self.resume(path, state)
        self.state.recent = []        # the other run's losses since its last log line are not this run's
        self.note(f"branched from {path} at step {self.state.step}, stage {self.stage}; settings that differ from that "
                  f"run's: {'; '.join(differ) or 'none'}")
        self.save()

    def load_original(self):
        """--gen_checkpoint_path / --disc_checkpoint_path in the original format (weights, optimizer, step)."""
        for path, model, opt, is_gen in ((self.cfg.gen_checkpoint_path, self.gen, self.optim.gen, True),
                                         (self.cfg.disc_checkpoint_path, self.disc, self.optim.disc, False)):
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
                self.state.step = int(meta["global_step"])
                self.curriculum.begin_stage_at(self.state.step)
            self.note(f"loaded {path}")

    # ---- divergence
    def diverged(self, logs: Dict[str, float]) -> bool:
        """A loss is not finite, or the discriminator's has been high for ``diverge_steps`` steps in a row."""
        return not all(math.isfinite(v) for v in logs.values()) or self.state.high_disc >= self.cfg.diverge_steps

    def rollback(self, logs: Dict[str, float]):
        """Back to the newest state from before the divergence began, with a new data order."""
        now = self.state.step                         # the step just taken
        began = now - self.state.high_disc            # the weights before the first diverging step
        found = checkpoints.newest_state(self.cfg.checkpoint_dir, before=began + 1, warn=self.note)
        if found is None or self.state.rollbacks >= self.cfg.max_rollbacks:
            raise TalkLipError(f"training diverged at step {now} (losses {fmt(logs)}) and "
                               + ("no earlier checkpoint exists" if found is None else
                                  f"{self.state.rollbacks} rollbacks did not help")
                               + ": lower --lr or validate more often (--ckpt_interval), then resume")
        rollbacks = self.state.rollbacks + 1
        self.note(f"divergence at step {now} (losses {fmt(logs)}): rolling back to {found[0]} "
                  f"(rollback {rollbacks}), with a new data order")
        self.resume(*found)
        self.state.rollbacks, self.state.high_disc = rollbacks, 0

    # ---- logging
    def log_scalars(self, prefix: str, values: Dict[str, float]):
        if self.tb is None:
            return
        step = self.state.step
        for k, v in values.items():
            self.tb.add_scalar(f"{prefix}/{k}", v, step)
        self.tb.add_scalar("train/lr", self.optim.gen.param_groups[0]["lr"], step)
        self.tb.add_scalar("train/stage", self.stage, step)

    def save_samples(self, samples: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
        """reference | masked | generated | ground truth, as the original's sample images."""
        if not self.dist.main:
            return
        import cv2
        x, g, gt = (t.detach().float().cpu().clamp(0, 1) for t in samples)
        grid = torch.cat([x[:, 3:], x[:, :3], g, gt], dim=3)            # (N, 3, 96, 4*96)
        folder = os.path.join(self.cfg.checkpoint_dir, f"samples_step{self.state.step:09d}")
        os.makedirs(folder, exist_ok=True)
        for i, img in enumerate(grid[:16]):
            cv2.imwrite(os.path.join(folder, f"{i}.jpg"), (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        if self.tb is not None:
            self.tb.add_images("samples", grid[:8].flip(1), self.state.step)     # BGR -> RGB

    # ---- set-up helpers
    def _data(self, train_names: List[str], valid_names: List[str]) -> TrainData:
        cfg = self.cfg
        labels = self._labels(train_names + valid_names)
        common = dict(file_dir=cfg.file_dir, video_root=cfg.video_root, audio_root=cfg.audio_root,
                      bbx_root=cfg.bbx_root, labels=labels, codec=self.expert.codec, seed=cfg.seed)
        train_set = TalkLipDataset("train", windows_per_clip=cfg.windows_per_clip, names=train_names,
                                   av_shift=cfg.av_shift, **common)
        sampler = ResumableBatchSampler(len(train_set), cfg.batch_size, self.dist.world, self.dist.rank,
                                        cfg.accum_steps, cfg.seed)
        return TrainData(labels, train_set, TalkLipDataset("valid", names=valid_names, **common), sampler)

    def _labels(self, names: List[str]) -> Dict[str, Tuple[str, str]]:
        """Transcripts, else pseudo-labels (rank 0 computes and caches them; the others then read
        the cache), else none; see training.labels."""
        cfg = self.cfg

        def make():
            return clip_labels(names, cfg.word_root, cfg.bbx_root, cfg.video_root, self.expert,
                               [self.expert_sha256], cfg.pseudo_label_beam, not cfg.no_lip_loss, self.note,
                               progress=not cfg.no_progress)
        if self.dist.world > 1 and not self.dist.main:
            dist.barrier()
        labels = make()
        if self.dist.world > 1 and self.dist.main:
            dist.barrier()
        self.check_vocabulary(labels)
        return labels

    def check_vocabulary(self, labels: Dict[str, Tuple[str, str]]) -> None:
        """The expert must spell the transcripts: a share of ``<unk>`` pieces above ``UNK_SHARE`` (train_expert.py's
        bound) is refused, naming it; above ``UNK_NOTE`` it is a warning. An expert trained on another word list
        turns most targets into ``<unk>`` and still shows a plausible token accuracy."""
        from training.expert import UNK_SHARE
        codec = self.expert.codec
        pieces = unknown = 0
        for kind, text in labels.values():
            if kind == TRANSCRIPT and text:
                ids = codec.encode(text)[:-1]
                pieces += len(ids)
                unknown += sum(i == codec.dictionary.unk_index for i in ids)
        share = unknown / max(1, pieces)
        where = f"{share:.0%} of the transcripts' pieces ({unknown} of {pieces}) are <unk> in {self.cfg.avhubert_path}'s vocabulary"
        if share > UNK_SHARE:
            raise TalkLipError(f"{where}: the expert was trained on other words; train one on these transcripts "
                               f"(train_expert.py) or give the expert they were written for")
        if share > UNK_NOTE:
            self.note(f"warning: {where}: the lip loss teaches <unk> for them")

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

    def _wrap(self) -> Parallel:
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            return Parallel(nn.parallel.DistributedDataParallel(self.objective, device_ids=ids,
                                                                find_unused_parameters=True),
                            nn.parallel.DistributedDataParallel(self.disc, device_ids=ids))
        return Parallel(self.objective, self.disc)


def fmt(values: Dict[str, float], keys=None) -> str:
    keys = keys or [k for k in values if k != "l1_sum"]
    return " ".join(f"{k} {values[k]:.4f}" for k in keys if k in values)
