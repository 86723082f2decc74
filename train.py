"""Train TalkLip with the lip-reading expert (the paper's three-stage curriculum).

    python train.py --file_dir LRS2 --video_root LRS2/main --audio_root LRS2/audio --bbx_root LRS2/bbx \
        --word_root LRS2/main --avhubert_path lip_reading_expert.pt --checkpoint_dir ckpt --log_name talklip
    torchrun --nproc_per_node 4 train.py ...        # every GPU of the machine (or nodes: --nnodes)

Stage 0 trains the generator with a frozen audio encoder; when the validation L1 has not improved
for more than --patience evaluations (every --ckpt_interval steps), stage 1 fine-tunes the encoder's
last three layers, stage 2 adds the expert's loss (--lip_w) and the contrastive loss (--cont_w),
and stage 3 stops. --stage_min_steps / --stage_max_steps bound each stage's length in steps (equal
values give a fixed schedule). Checkpoints are the original's (checkpoint_stepN.pth,
disc_checkpoint_stepN.pth) plus state_stepN.pt; rerunning the same command resumes exactly.
"""
import argparse
import dataclasses
import sys

from models.presets import TALKLIP_PRESETS
from training.trainer import TrainConfig, Trainer
from utils.cli import any_int, non_negative_float, non_negative_int, per_stage, positive_float, positive_int
from utils.device import add_device_arg
from utils.errors import run_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = p.add_argument_group("data")
    data.add_argument("--file_dir", required=True, help="folder of train.txt and valid.txt (one <spk>/<clip> per line)")
    data.add_argument("--video_root", required=True, help="folder of <spk>/<clip>.mp4")
    data.add_argument("--audio_root", required=True, help="folder of <spk>/<clip>.wav (preprocess.sh output)")
    data.add_argument("--bbx_root", required=True, help="folder of <spk>/<clip>.npy face boxes (preprocess.sh output)")
    data.add_argument("--word_root", default=None,
                      help="folder of LRS2 <spk>/<clip>.txt transcripts; clips without one (or all, when not "
                           "given) get pseudo-labels from the expert, cached as <bbx_root>/<clip>.pseudo.json")
    data.add_argument("--num_worker", type=non_negative_int, default=6, help="data-loading processes")
    data.add_argument("--valid_clips", type=positive_int, default=None,
                      help="validate on the first N clips of valid.txt (default: all)")
    data.add_argument("--windows_per_clip", type=positive_int, default=None,
                      help="5-frame training windows drawn per clip (default: 8%% of its frames, as the original)")
    model = p.add_argument_group("models")
    model.add_argument("--avhubert_path", required=True, help="the lip-reading expert (AV-HuBERT seq2seq .pt)")
    model.add_argument("--avhubert_root", default=None, help="ignored: AV-HuBERT is built in")
    model.add_argument("--generator_preset", default="paper", choices=list(TALKLIP_PRESETS),
                       help="generator/discriminator widths: paper (the released models) or cpu (4x narrower, "
                            "for CPU training on small corpora); stored in the checkpoints")
    model.add_argument("--gen_checkpoint_path", default=None, help="start from this generator (original format)")
    model.add_argument("--disc_checkpoint_path", default=None, help="start from this discriminator (original format)")
    loss = p.add_argument_group("losses and optimisation")
    loss.add_argument("--cont_w", type=non_negative_float, default=1e-3, help="weight of the contrastive loss (stage 2 on)")
    loss.add_argument("--lip_w", type=non_negative_float, default=1e-5, help="weight of the lip-reading expert loss (stage 2 on)")
    loss.add_argument("--perp_w", type=non_negative_float, default=0.07, help="weight of the perceptual (GAN) loss")
    loss.add_argument("--no_lip_loss", action="store_true",
                      help="no lip-reading cross-entropy (needs no text at all); the contrastive loss stays")
    loss.add_argument("--pseudo_label_beam", type=positive_int, default=1,
                      help="beam of the expert's decoding of real mouths for clips without a transcript (1: greedy)")
    loss.add_argument("--lr", type=positive_float, default=1e-4, help="Adam learning rate of the generator")
    loss.add_argument("--disc_lr", type=positive_float, default=None,
                      help="Adam learning rate of the discriminator (default: --lr, as the original)")
    loss.add_argument("--lr_warmdown", type=non_negative_int, default=0,
                      help="decay both learning rates linearly to a tenth over the last N steps before --max_steps "
                           "(0: constant, as the original)")
    loss.add_argument("--batch_size", type=positive_int, default=8, help="clips per step per process")
    loss.add_argument("--accum_steps", type=positive_int, default=1,
                      help="micro-batches per step (batch = batch_size x processes x this)")
    loss.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    loss.add_argument("--seed", type=non_negative_int, default=0, help="seed of the initial weights, data order and dropout")
    sched = p.add_argument_group("schedule")
    sched.add_argument("--n_epoch", type=positive_int, default=100, help="stop after this many epochs")
    sched.add_argument("--max_steps", type=positive_int, default=None, help="stop after this many steps")
    sched.add_argument("--ckpt_interval", type=positive_int, default=3000, help="steps between validation + checkpoint")
    sched.add_argument("--log_interval", type=positive_int, default=100,
                       help="steps between lines of mean training losses in the text log")
    sched.add_argument("--patience", type=non_negative_int, default=5,
                       help="validations without a new best L1 before a stage ends")
    sched.add_argument("--start_stage", type=any_int, default=0, choices=[0, 1, 2], help="begin at this stage")
    sched.add_argument("--stage_min_steps", type=per_stage(3), default=(0, 0, 0), metavar="S0,S1,S2",
                       help="a plateau ends a stage only after this many steps in it (per stage, or one value)")
    sched.add_argument("--stage_max_steps", type=per_stage(3), default=(0, 0, 0), metavar="S0,S1,S2",
                       help="a stage ends after this many steps in it whatever the L1 does (0: no limit)")
    robust = p.add_argument_group("checkpoints and robustness")
    robust.add_argument("--checkpoint_dir", required=True, help="where checkpoints, logs and samples go")
    robust.add_argument("--log_name", default="talklip", help="name of the text log <checkpoint_dir>/<log_name>.log")
    robust.add_argument("--keep_last", type=positive_int, default=3, help="checkpoints of each kind kept")
    robust.add_argument("--resume_anyway", action="store_true",
                        help="resume even when the state was written with another batch size, accumulation, "
                             "process count, preset or expert")
    robust.add_argument("--diverge_threshold", type=positive_float, default=20.0,
                        help="a discriminator loss above this counts as diverging")
    robust.add_argument("--diverge_steps", type=positive_int, default=50,
                        help="that many diverging steps in a row roll back to the last checkpoint before them")
    robust.add_argument("--max_rollbacks", type=non_negative_int, default=5, help="rollbacks before giving up")
    robust.add_argument("--max_oom", type=positive_int, default=10,
                        help="out-of-memory steps in a row (each skipped) before the run stops")
    robust.add_argument("--gpu", type=non_negative_int, default=None, help="accepted for compatibility; use --device or CUDA_VISIBLE_DEVICES")
    add_device_arg(robust)
    robust.add_argument("--no_tensorboard", action="store_true", help="do not write TensorBoard logs")
    robust.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p.parse_args(argv)


def config_from_args(args) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    cfg.tensorboard = not args.no_tensorboard
    return cfg


def main(args) -> int:
    if args.avhubert_root:
        print("note: --avhubert_root is ignored; AV-HuBERT is built into talklip", file=sys.stderr)
    summary = Trainer(config_from_args(args)).run()
    print(f"finished at step {summary['step']}, stage {summary['stage']} ({summary['stage_name']}): "
          f"{summary['checkpoint']}")
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
