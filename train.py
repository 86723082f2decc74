"""Train TalkLip with the lip-reading expert (the paper's three-stage curriculum).

    python train.py --file_dir LRS2 --video_root LRS2/main --audio_root LRS2/audio --bbx_root LRS2/bbx \
        --word_root LRS2/main --avhubert_path lip_reading_expert.pt --checkpoint_dir ckpt --log_name talklip
    torchrun --nproc_per_node 4 train.py ...        # every GPU of the machine (or nodes: --nnodes)

Stage 0 trains the generator with a frozen audio encoder; when the validation L1 has not improved
for more than --patience evaluations (every --ckpt_interval steps), stage 1 fine-tunes the encoder's
last three layers, stage 2 adds the expert's loss (--lip_w) and the contrastive loss (--cont_w),
and stage 3 stops. Checkpoints are the original's (checkpoint_stepN.pth, disc_checkpoint_stepN.pth)
plus state_stepN.pt; rerunning the same command resumes from the latest state exactly.
"""
import argparse
import dataclasses
import sys

from training.trainer import TrainConfig, Trainer
from utils.errors import run_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file_dir", required=True, help="folder of train.txt and valid.txt")
    p.add_argument("--video_root", required=True)
    p.add_argument("--audio_root", required=True)
    p.add_argument("--bbx_root", required=True)
    p.add_argument("--word_root", required=True, help="folder of LRS2 <name>.txt transcripts")
    p.add_argument("--avhubert_path", required=True, help="the lip-reading expert (AV-HuBERT seq2seq .pt)")
    p.add_argument("--avhubert_root", default=None, help="ignored: AV-HuBERT is built in")
    p.add_argument("--checkpoint_dir", required=True)
    p.add_argument("--log_name", default="talklip")
    p.add_argument("--cont_w", type=float, default=1e-3, help="weight of the contrastive loss")
    p.add_argument("--lip_w", type=float, default=1e-5, help="weight of the lip-reading expert loss")
    p.add_argument("--perp_w", type=float, default=0.07, help="weight of the perceptual (GAN) loss")
    p.add_argument("--gen_checkpoint_path", default=None, help="start from this generator (original format)")
    p.add_argument("--disc_checkpoint_path", default=None, help="start from this discriminator")
    p.add_argument("--batch_size", type=int, default=8, help="clips per step per process")
    p.add_argument("--num_worker", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--n_epoch", type=int, default=100)
    p.add_argument("--ckpt_interval", type=int, default=3000, help="steps between validation + checkpoint")
    p.add_argument("--gpu", type=int, default=None, help="accepted for compatibility; use CUDA_VISIBLE_DEVICES")
    p.add_argument("--patience", type=int, default=5, help="validations without improvement before a stage ends")
    p.add_argument("--accum_steps", type=int, default=1, help="micro-batches per step (batch = batch_size x this)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep_last", type=int, default=3, help="checkpoints kept")
    p.add_argument("--max_steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--valid_clips", type=int, default=None, help="validate on the first N clips of valid.txt")
    p.add_argument("--windows_per_clip", type=int, default=None, help="training windows per clip (default 8%% of frames)")
    p.add_argument("--diverge_threshold", type=float, default=20.0, help="discriminator loss deemed diverged")
    p.add_argument("--diverge_steps", type=int, default=50, help="... for this many steps in a row -> roll back")
    p.add_argument("--max_rollbacks", type=int, default=5)
    p.add_argument("--device", default="auto", help="auto (GPU if present) or cpu")
    p.add_argument("--start_stage", type=int, default=0, choices=[0, 1, 2], help="begin at this stage")
    p.add_argument("--no_tensorboard", action="store_true")
    p.add_argument("--no_progress", action="store_true")
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
