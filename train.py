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

from training.config import build_parser, config_from_args
from training.trainer import Trainer
from utils.cli import note_ignored_flags
from utils.errors import run_cli


def parse_args(argv=None) -> argparse.Namespace:
    """Every flag is a field of ``training.config.TrainConfig`` (its default, help and type live there)."""
    return build_parser(__doc__.splitlines()[0]).parse_args(argv)


def main(args) -> int:
    note_ignored_flags(args)
    summary = Trainer(config_from_args(args)).run()
    print(f"finished at step {summary['step']}, stage {summary['stage']} ({summary['stage_name']}): "
          f"{summary['checkpoint']}")
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
