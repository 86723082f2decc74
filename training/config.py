"""The trainers' options, declared once: TalkLip's (``TrainConfig``, ``train.py``) and the expert's
(``ExpertConfig``, ``train_expert.py``).

Each field carries its default, its help, its command-line type and its group (one of its class'
``GROUPS``); ``build_parser`` turns them into the script's argparse parser, so the command line and the
library cannot disagree. A field without a default is a required flag, a ``bool`` field a switch
(``flag=`` names a switch that clears it instead, e.g. ``--no_tensorboard``). The loss weights are
fields here too; ``TrainConfig.weights`` hands the objective its ``LossWeights``.
"""
import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Optional, Tuple

from models.presets import EXPERT_PRESETS, TALKLIP_PRESETS
from utils.cli import (IGNORED_HELP, any_int, non_negative_float, non_negative_int, path_list, per_stage, positive_float,
                       positive_int)
from utils.device import DEVICE_HELP
from utils.errors import TalkLipError

def option(default: Any = dataclasses.MISSING, *, help: str, group: str, type=None, choices=None,
           metavar: Optional[str] = None, flag: Optional[str] = None):
    """A config field: its default and everything ``build_parser`` needs for its flag."""
    meta = {"help": help, "group": group, "type": type, "choices": choices, "metavar": metavar, "flag": flag}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class LossWeights:
    """The generator's loss weights for one step (``TrainConfig.weights``)."""
    lip_w: float      # the expert's cross-entropy on the transcript
    perp_w: float     # the perceptual (GAN) loss
    cont_w: float     # the audio-visual contrastive loss
    lip_loss: bool = True   # False (--no_lip_loss): the lip term is dropped, every other weight unchanged
    mouth_l1_w: float = 0.0  # L1 inside the mouth window counts 1 + this (0: the original's plain L1)


class OptionsFromDict:
    """``from_dict`` for a config of ``option`` fields."""

    @classmethod
    def from_dict(cls, values: Dict[str, Any]):
        """A config from named values; a name that is no option is an error (a typo is not ignored)."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TalkLipError(f"unknown {cls.WHAT} option(s) {', '.join(unknown)}: see {cls.SCRIPT} --help for the "
                               f"names")
        return cls(**values)


@dataclass(kw_only=True)
class TrainConfig(OptionsFromDict):
    GROUPS: ClassVar[Tuple[str, ...]] = ("data", "models", "losses and optimisation", "schedule",
                                         "checkpoints and robustness")
    WHAT: ClassVar[str] = "training"
    SCRIPT: ClassVar[str] = "train.py"
    # data
    file_dir: str = option(help="folder of train.txt and valid.txt (one <spk>/<clip> per line)", group="data")
    video_root: str = option(help="folder of <spk>/<clip>.mp4", group="data")
    audio_root: str = option(help="folder of <spk>/<clip>.wav (preprocess.sh output)", group="data")
    bbx_root: str = option(help="folder of <spk>/<clip>.npy face boxes (preprocess.sh output)", group="data")
    word_root: Optional[str] = option(
        None, group="data", help="folder of LRS2 <spk>/<clip>.txt transcripts; clips without one (or all, when not "
                                 "given) get pseudo-labels from the expert, cached as <bbx_root>/<clip>.pseudo.json")
    num_worker: int = option(6, type=non_negative_int, group="data", help="data-loading processes")
    valid_clips: Optional[int] = option(None, type=positive_int, group="data",
                                        help="validate on the first N clips of valid.txt (default: all)")
    windows_per_clip: Optional[int] = option(
        None, type=positive_int, group="data",
        help="5-frame training windows drawn per clip (default: 8%% of its frames, as the original)")
    av_shift: int = option(0, type=non_negative_int, group="data",
                           help="each time a training clip is read, move its speech by a random whole number of "
                                "frames, up to N, against the video (validation stays in step; 0: off)")
    max_audio_gap: float = option(0.5, type=non_negative_float, group="data",
                                  help="seconds: a clip whose audio ends more than this before its video is left out "
                                       "(its last windows would train against silence); any gap over two frames is "
                                       "named in a warning")
    # models
    avhubert_path: str = option(help="the lip-reading expert (AV-HuBERT seq2seq .pt)", group="models")
    lip_ensemble: Tuple[str, ...] = option(
        (), type=path_list, metavar="E2.pt,E3.pt", group="models",
        help="more lip readers (sharing --avhubert_path's vocabulary: train_expert.py --vocab_from) behind one lip "
             "loss: the cross-entropy of their mean log-probabilities, so that a pattern fooling one reader does not "
             "lower it (models.avhubert.ensemble); the contrastive loss and pseudo-labels stay --avhubert_path's")
    avhubert_root: Optional[str] = option(None, group="models", help=IGNORED_HELP)
    generator_preset: str = option(
        "paper", choices=list(TALKLIP_PRESETS), group="models",
        help="generator/discriminator widths: paper (the released models) or cpu (4x narrower, for CPU training "
             "on small corpora); stored in the checkpoints")
    gen_checkpoint_path: Optional[str] = option(None, group="models",
                                                help="start from this generator (original format)")
    disc_checkpoint_path: Optional[str] = option(None, group="models",
                                                 help="start from this discriminator (original format)")
    # losses and optimisation
    cont_w: float = option(1e-3, type=non_negative_float, group="losses and optimisation",
                           help="weight of the contrastive loss (stage 2 on)")
    lip_w: float = option(1e-5, type=non_negative_float, group="losses and optimisation",
                          help="weight of the lip-reading expert loss (stage 2 on)")
    perp_w: float = option(0.07, type=non_negative_float, group="losses and optimisation",
                           help="weight of the perceptual (GAN) loss")
    mouth_l1_w: float = option(0.0, type=non_negative_float, group="losses and optimisation",
                               help="L1 at the mouth (the window training.objective.MOUTH_WINDOW of the 96-px face) counts "
                                    "1 + this, normalised so a uniform error gives the same L1 (0: the original's plain L1); "
                                    "the mouth is ~15%% of the face, so plain L1 spends most of its gradient elsewhere")
    no_lip_loss: bool = option(False, group="losses and optimisation",
                               help="no lip-reading cross-entropy (needs no text at all); the contrastive loss stays, and "
                                    "so do the other terms' weights (L1 keeps 1 - lip_w - perp_w): an ablation of the "
                                    "lip term alone, identical to the full run until stage 2")
    lip_augment: int = option(
        0, type=non_negative_int, group="losses and optimisation",
        help="average the lip loss over this many randomly changed copies of the generated mouth crops (noise, "
             "shift), as CLIP guidance averages over augmentations: only what survives them lowers the loss; 0: the "
             "plain loss; never in validation. Costs this many more expert passes per stage-2 step")
    lip_augment_noise: float = option(1.0, type=non_negative_float, group="losses and optimisation",
                                      help="the copies' Gaussian noise: std drawn from U(0, this), normalised units")
    lip_augment_shift: int = option(3, type=non_negative_int, group="losses and optimisation",
                                    help="the copies' random shift, up to this many px")
    pseudo_label_beam: int = option(
        1, type=positive_int, group="losses and optimisation",
        help="beam of the expert's decoding of real mouths for clips without a transcript (1: greedy)")
    lr: float = option(1e-4, type=positive_float, group="losses and optimisation",
                       help="Adam learning rate of the generator")
    disc_lr: Optional[float] = option(None, type=positive_float, group="losses and optimisation",
                                      help="Adam learning rate of the discriminator (default: --lr, as the original)")
    lr_warmdown: int = option(0, type=non_negative_int, group="losses and optimisation",
                              help="decay both learning rates linearly to a tenth over the last N steps before "
                                   "--max_steps (0: constant, as the original)")
    lr_hold: int = option(0, type=non_negative_int, group="losses and optimisation",
                          help="end --lr_warmdown this many steps before --max_steps and hold the tenth for them")
    batch_size: int = option(8, type=positive_int, group="losses and optimisation", help="clips per step per process")
    accum_steps: int = option(1, type=positive_int, group="losses and optimisation",
                              help="micro-batches per step (batch = batch_size x processes x this)")
    bf16: bool = option(False, group="losses and optimisation",
                        help="bf16 autocast: on a GPU, or a CPU with AVX512-BF16 or AMX (the quickstart's steps take "
                             "0.6x the time on 2 such cores); elsewhere the CPU emulates bf16, slower than fp32")
    seed: int = option(0, type=non_negative_int, group="losses and optimisation",
                       help="seed of the initial weights, data order and dropout")
    # schedule
    n_epoch: int = option(100, type=positive_int, group="schedule", help="stop after this many epochs")
    max_steps: Optional[int] = option(None, type=positive_int, group="schedule", help="stop after this many steps")
    ckpt_interval: int = option(3000, type=positive_int, group="schedule",
                                help="steps between validation + checkpoint")
    log_interval: int = option(100, type=positive_int, group="schedule",
                               help="steps between lines of mean training losses in the text log")
    patience: int = option(5, type=non_negative_int, group="schedule",
                           help="validations without a new best L1 before a stage ends")
    start_stage: int = option(0, type=any_int, choices=[0, 1, 2], group="schedule", help="begin at this stage")
    stage_min_steps: Tuple[int, ...] = option(
        (0, 0, 0), type=per_stage(3), metavar="S0,S1,S2", group="schedule",
        help="a plateau ends a stage only after this many steps in it (per stage, or one value)")
    stage_max_steps: Tuple[int, ...] = option(
        (0, 0, 0), type=per_stage(3), metavar="S0,S1,S2", group="schedule",
        help="a stage ends after this many steps in it whatever the L1 does (0: no limit)")
    # checkpoints and robustness
    checkpoint_dir: str = option(help="where checkpoints, logs and samples go", group="checkpoints and robustness")
    log_name: str = option("talklip", group="checkpoints and robustness",
                           help="name of the text log <checkpoint_dir>/<log_name>.log")
    keep_last: int = option(3, type=positive_int, group="checkpoints and robustness",
                            help="checkpoints of each kind kept")
    branch_from: Optional[str] = option(
        None, group="checkpoints and robustness", metavar="STATE",
        help="start from another run's state_stepN.pt (weights, optimisers, curriculum, data position, random "
             "state) when --checkpoint_dir holds no state yet; the log lists the settings that differ from that "
             "run's. A new stage always starts from a saved state, so e.g. the lip-loss ablation branches where "
             "stage 2 begins and equals a run of its own from step 0")
    resume_anyway: bool = option(False, group="checkpoints and robustness",
                                 help="resume even when the state was written with another batch size, accumulation, "
                                      "process count or expert (not another --generator_preset: its weights do not fit)")
    diverge_threshold: float = option(20.0, type=positive_float, group="checkpoints and robustness",
                                      help="a discriminator loss above this counts as diverging")
    diverge_steps: int = option(50, type=positive_int, group="checkpoints and robustness",
                                help="that many diverging steps in a row roll back to the last checkpoint before them")
    max_rollbacks: int = option(5, type=non_negative_int, group="checkpoints and robustness",
                                help="rollbacks before giving up")
    max_oom: int = option(10, type=positive_int, group="checkpoints and robustness",
                          help="out-of-memory steps in a row (each skipped) before the run stops")
    gpu: Optional[int] = option(None, type=non_negative_int, group="checkpoints and robustness",
                                help="accepted for compatibility; use --device or CUDA_VISIBLE_DEVICES")
    device: str = option("auto", group="checkpoints and robustness", help=f"where models run: {DEVICE_HELP}")
    tensorboard: bool = option(True, flag="--no_tensorboard", group="checkpoints and robustness",
                               help="do not write TensorBoard logs")
    no_progress: bool = option(False, group="checkpoints and robustness", help="hide the progress bar")

    @property
    def weights(self) -> LossWeights:
        return LossWeights(lip_w=self.lip_w, perp_w=self.perp_w, cont_w=self.cont_w, lip_loss=not self.no_lip_loss,
                           mouth_l1_w=self.mouth_l1_w)

    @property
    def logged_losses(self) -> Tuple[str, ...]:
        return ("loss", "l1", "perc", "cont") if self.no_lip_loss else ("loss", "l1", "perc", "lip", "cont")


def build_parser(description: str = "", config=TrainConfig) -> argparse.ArgumentParser:
    """A script's parser: one flag per field of ``config``, in its groups, with its help and type."""
    parser = argparse.ArgumentParser(description=description)
    groups = {name: parser.add_argument_group(name) for name in config.GROUPS}
    for f in dataclasses.fields(config):
        meta, required = f.metadata, f.default is dataclasses.MISSING
        assert meta["group"] in groups, (f.name, meta["group"])
        kwargs = {"dest": f.name, "help": meta["help"]}
        if f.type in (bool, "bool"):
            kwargs.update(action="store_false" if meta["flag"] else "store_true", default=f.default)
        else:
            kwargs.update(required=required, default=None if required else f.default)
            for key in ("type", "choices", "metavar"):
                if meta[key] is not None:
                    kwargs[key] = meta[key]
        groups[meta["group"]].add_argument(meta["flag"] or f"--{f.name}", **kwargs)
    return parser


def config_from_args(args: argparse.Namespace, config=TrainConfig):
    return config.from_dict(vars(args))


@dataclass(kw_only=True)
class ExpertConfig(OptionsFromDict):
    """How the lip-reading expert is trained (``training.expert.train_expert``); kept in the file it writes."""
    GROUPS: ClassVar[Tuple[str, ...]] = ("data", "model", "training", "robustness", "running and output")
    WHAT: ClassVar[str] = "expert"
    SCRIPT: ClassVar[str] = "train_expert.py"
    # data
    file_dir: str = option(help="folder of train.txt and valid.txt", group="data")
    video_root: str = option(help="folder of <spk>/<clip>.mp4 (face-centred frames, as LRS2)", group="data")
    word_root: str = option(help="folder of <name>.txt transcripts", group="data")
    viseme_root: Optional[str] = option(
        None, group="data", help="a corpus' gt/ folder: also learn each frame's label, the readable corpus' viseme or "
                                 "GRID's word (preparation.grid): frame-level supervision of the visual front end; the "
                                 "head is not saved")
    test_filelist: Optional[str] = option(None, group="data",
                                          help="also report the WER (and the blank-video WER) on these held-out clips")
    # model
    init: Optional[str] = option(None, group="model",
                                 help="AV-HuBERT pretraining or seq2seq checkpoint to start from")
    preset: str = option("tiny", choices=list(EXPERT_PRESETS), group="model", help="size when training from scratch")
    vocab_size: int = option(100, type=positive_int, group="model", help="sentencepiece pieces (upper bound)")
    vocab_from: Optional[str] = option(
        None, group="model", metavar="READER",
        help="take this reader's vocabulary (sentencepiece and dictionary) instead of learning one: the experts of one "
             "lip-loss ensemble (train.py --lip_ensemble) must share theirs")
    # training
    steps: int = option(300, type=positive_int, group="training", help="optimisation steps")
    batch_size: int = option(4, type=positive_int, group="training", help="clips per step")
    lr: float = option(1e-3, type=positive_float, group="training",
                       help="peak Adam learning rate (linear warm-up over a tenth of the steps)")
    lr_decay: str = option("none", choices=["none", "cosine"], group="training",
                           help="after the warm-up: hold the peak (none), or fall along a cosine to a twentieth of it "
                                "at the last step (cosine: real mouths, whose readers swing at a held peak)")
    seed: int = option(0, type=non_negative_int, group="training", help="seed of the initial weights and batch order")
    viseme_weight: float = option(1.0, type=non_negative_float, group="training", help="weight of the viseme loss")
    audio_visual: bool = option(
        False, group="training",
        help="also learn to read each clip's speech (AV-HuBERT's modality dropout: a quarter of the steps audio only, "
             "a quarter both): the generator's audio encoder starts from this encoder")
    eval_every: int = option(0, type=non_negative_int, group="training",
                             help="log the validation WER every N steps (0: only at the end)")
    # robustness
    noise_std: float = option(
        0.0, type=non_negative_float, group="robustness",
        help="randomized smoothing: Gaussian noise on every training clip's crops, of a std drawn from U(0, this) "
             "(normalised units: 1.0 is 42 grey levels); video only, never in evaluation")
    blur_sigma: float = option(0.0, type=non_negative_float, group="robustness",
                               help="also blur half the training clips' crops, sigma drawn from U(0.5, this) px")
    shift_px: int = option(0, type=non_negative_int, group="robustness",
                           help="also shift each training clip's crops by up to this many px")
    adv_eps: float = option(0.0, type=non_negative_float, group="robustness",
                            help="adversarial training: perturb the training crops against the expert within this "
                                 "many grey levels (0: off)")
    adv_steps: int = option(1, type=positive_int, group="robustness",
                            help="steps of the adversarial perturbation (1: FGSM, more: PGD)")
    # output
    out: Optional[str] = option(None, group="running and output", help="checkpoint to write (.pt); required unless --evaluate")
    evaluate: bool = option(
        False, group="running and output",
        help="do not train: read the --test_filelist clips (without one, the validation clips) with the reader "
             "given by --init and report its WER, as training would (for readers trained once and shipped)")
    out_json: Optional[str] = option(None, group="running and output", help="also write the validation results here")
    device: str = option("auto", group="running and output", help=f"where models run: {DEVICE_HELP}")
    no_progress: bool = option(False, group="running and output", help="hide the progress bar")
