"""Train the lip-reading expert (AV-HuBERT seq2seq) on an LRS2-layout corpus, for your own data or
language: fine-tune a released AV-HuBERT checkpoint (--init) or train a small one from scratch.

    python train_expert.py --file_dir DATA --video_root DATA/main --word_root DATA/main --out expert.pt \
        [--init base_vox_iter5.pt] [--preset tiny|base|large] [--steps 300]

Input is the central 88 x 88 grey crop of each frame, as TalkLip feeds its expert. Without --init
(or when --init has no dictionary) a sentencepiece model is trained on train.txt's transcripts.
The output loads with train.py --avhubert_path and the observer-1 evaluation.
"""
import json

from training.config import ExpertConfig, build_parser, config_from_args
from training.expert import evaluate_reader, train_expert
from utils.device import resolve_device
from utils.errors import run_cli
from utils.fileio import atomic_output


def parse_args(argv=None) -> ExpertConfig:
    parser = build_parser(__doc__.split("\n\n")[0].replace("\n", " "), ExpertConfig)
    cfg = config_from_args(parser.parse_args(argv), ExpertConfig)
    if cfg.evaluate and not cfg.init:
        parser.error("--evaluate reads with the reader given by --init: pass its checkpoint")
    if not cfg.evaluate and not cfg.out:
        parser.error("--out: give the checkpoint to write (or --evaluate to only read with --init)")
    return cfg


def main(cfg: ExpertConfig) -> int:
    if cfg.evaluate:
        result = evaluate_reader(cfg.init, cfg.file_dir, cfg.video_root, cfg.word_root, cfg.test_filelist,
                                 device=resolve_device(cfg.device), progress=not cfg.no_progress)
        write_json(cfg.out_json, result)
        return 0
    result = train_expert(cfg)
    write_json(cfg.out_json, result)
    print(f"expert written to {cfg.out}: validation token accuracy {result['token_acc']:.3f} "
          f"(blank video {result['token_acc_blank']:.3f}), WER {result['wer']:.3f} "
          f"(blank video {result['wer_blank']:.3f})")
    return 0


def write_json(path, result):
    if path:
        with atomic_output(path) as tmp, open(tmp, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    run_cli(main, parse_args())
