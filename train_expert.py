"""Train the lip-reading expert (AV-HuBERT seq2seq) on an LRS2-layout corpus, for your own data or
language: fine-tune a released AV-HuBERT checkpoint (--init) or train a small one from scratch.

    python train_expert.py --file_dir DATA --video_root DATA/main --word_root DATA/main --out expert.pt \
        [--init base_vox_iter5.pt] [--preset tiny|base|large] [--steps 300]

Input is the central 88 x 88 grey crop of each frame, as TalkLip feeds its expert. Without --init
(or when --init has no dictionary) a sentencepiece model is trained on train.txt's transcripts.
The output loads with train.py --avhubert_path and the observer-1 evaluation.
"""
import argparse
import json

from models.presets import EXPERT_PRESETS
from training.expert import AdversarialCrops, evaluate_reader, train_expert
from training.mouth_augment import CropAugment
from utils.cli import non_negative_float, non_negative_int, positive_float, positive_int
from utils.device import add_device_arg, resolve_device
from utils.errors import run_cli
from utils.fileio import atomic_output


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file_dir", required=True, help="folder of train.txt and valid.txt")
    p.add_argument("--video_root", required=True, help="folder of <spk>/<clip>.mp4 (face-centred frames, as LRS2)")
    p.add_argument("--word_root", required=True, help="folder of <name>.txt transcripts")
    p.add_argument("--out", default=None, help="checkpoint to write (.pt); required unless --evaluate")
    p.add_argument("--init", default=None, help="AV-HuBERT pretraining or seq2seq checkpoint to start from")
    p.add_argument("--preset", default="tiny", choices=EXPERT_PRESETS, help="size when training from scratch")
    p.add_argument("--steps", type=positive_int, default=300, help="optimisation steps")
    p.add_argument("--batch_size", type=positive_int, default=4, help="clips per step")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak Adam learning rate (linear warm-up over a tenth of the steps)")
    p.add_argument("--vocab_size", type=positive_int, default=100, help="sentencepiece pieces (upper bound)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the initial weights and batch order")
    p.add_argument("--viseme_root", default=None,
                   help="a synthetic corpus' gt/ folder: also learn each frame's viseme (frame-level supervision "
                        "of the visual front end; the head is not saved)")
    p.add_argument("--viseme_weight", type=non_negative_float, default=1.0, help="weight of the viseme loss")
    p.add_argument("--test_filelist", default=None,
                   help="also report the WER (and the blank-video WER) on these held-out clips")
    p.add_argument("--eval_every", type=non_negative_int, default=0,
                   help="log the validation WER every N steps (0: only at the end)")
    p.add_argument("--audio_visual", action="store_true",
                   help="also learn to read each clip's speech (AV-HuBERT's modality dropout: a quarter of the steps "
                        "audio only, a quarter both): the generator's audio encoder starts from this encoder")
    p.add_argument("--noise_std", type=non_negative_float, default=0.0,
                   help="randomized smoothing: Gaussian noise on every training clip's crops, of a std drawn from "
                        "U(0, this) (normalised units: 1.0 is 42 grey levels); video only, never in evaluation")
    p.add_argument("--blur_sigma", type=non_negative_float, default=0.0,
                   help="also blur half the training clips' crops, sigma drawn from U(0.5, this) px")
    p.add_argument("--shift_px", type=non_negative_int, default=0, help="also shift each training clip's crops by up to this many px")
    p.add_argument("--adv_eps", type=non_negative_float, default=0.0,
                   help="adversarial training: perturb the training crops against the expert within this many grey "
                        "levels (0: off)")
    p.add_argument("--adv_steps", type=positive_int, default=1, help="steps of the adversarial perturbation (1: FGSM, more: PGD)")
    p.add_argument("--evaluate", action="store_true",
                   help="do not train: read the --test_filelist clips (without one, the validation clips) with the "
                        "reader given by --init and report its WER, as training would (for readers trained once and shipped)")
    p.add_argument("--out_json", default=None, help="also write the validation results here")
    add_device_arg(p)
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    if args.evaluate and not args.init:
        p.error("--evaluate reads with the reader given by --init: pass its checkpoint")
    if not args.evaluate and not args.out:
        p.error("--out: give the checkpoint to write (or --evaluate to only read with --init)")
    return args


def main(args) -> int:
    if args.evaluate:
        result = evaluate_reader(args.init, args.file_dir, args.video_root, args.word_root, args.test_filelist,
                                 device=resolve_device(args.device), progress=not args.no_progress)
        write_json(args.out_json, result)
        return 0
    result = train_expert(args.file_dir, args.video_root, args.word_root, args.out, init=args.init,
                          preset=args.preset, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          vocab_size=args.vocab_size, seed=args.seed, device=resolve_device(args.device),
                          progress=not args.no_progress, viseme_root=args.viseme_root,
                          viseme_weight=args.viseme_weight, eval_every=args.eval_every,
                          test_filelist=args.test_filelist, audio_visual=args.audio_visual,
                          augment=CropAugment(noise_std=args.noise_std, blur_sigma=args.blur_sigma, shift_px=args.shift_px),
                          adversarial=AdversarialCrops(eps_grey=args.adv_eps, steps=args.adv_steps))
    write_json(args.out_json, result)
    print(f"expert written to {args.out}: validation token accuracy {result['token_acc']:.3f} "
          f"(blank video {result['token_acc_blank']:.3f}), WER {result['wer']:.3f} "
          f"(blank video {result['wer_blank']:.3f})")
    return 0


def write_json(path, result):
    if path:
        with atomic_output(path) as tmp, open(tmp, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    run_cli(main, parse_args())
