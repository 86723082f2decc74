"""WER by lip-reading observer 1 (AV-HuBERT seq2seq fine-tuned on LRS2), and LRW word accuracy.

    python -m evaluation.avhubert_wer --video_root SYNT --filelist test.txt --bbx_root LRS2/bbx \
        --word_root LRS2/main --ckpt_path observer1.pt
    python -m evaluation.avhubert_wer --lrw ...        # word accuracy: decoded text vs the LRW label

Decoding is fairseq's beam search with ``s2s_decode.yaml``'s settings (beam 50, max_len_a 1.0,
max_len_b 0, lenpen 1.0) on the video alone; WER is corpus-level (all edits / all reference
words), as av_hubert's infer_s2s reports it, upper-cased. Mouth crops: ``--roi bbx`` (default) cuts
the mouth from each frame's stored face box (the lower-middle of the 96 x 96 face crop, resized to
96 x 96, central 88 x 88); ``--roi center`` is the original protocol, the central 88 x 88 of the
whole frame (right for LRS2's 160 x 160 face-centred frames).
"""
import argparse
import dataclasses
from typing import Optional

import jiwer

from evaluation.common import (ClipRun, add_clip_args, clip_run, evaluate_clips, exit_status, file_identity,
                               from_args, scored)
from utils.wer import normalise
from models.avhubert import load_avhubert
from models.avhubert.reading import decode_clip, mouth_rois
from utils.cli import add_device_arg, any_float, non_negative_float, non_negative_int, positive_int
from utils.corpus import load_boxes, lrw_label, read_transcript
from utils.device import resolve_device
from utils.errors import MediaError, run_cli

def add_decode_args(parser):
    parser.add_argument("--beam", type=positive_int, default=50, help="beam width of the decoding (1: greedy)")
    parser.add_argument("--max_len_a", type=non_negative_float, default=1.0,
                        help="longest transcript in tokens: max_len_a x frames + max_len_b")
    parser.add_argument("--max_len_b", type=non_negative_int, default=0, help="see --max_len_a")
    parser.add_argument("--lenpen", type=any_float, default=1.0, help="length penalty of the beam search")
    parser.add_argument("--roi", choices=["bbx", "center"], default="bbx",
                        help="mouth crops from the face boxes, or the original's frame-centre crop")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video_root", required=True, help="folder of synthesized <name>.mp4")
    parser.add_argument("--ckpt_path", required=True, help="AV-HuBERT seq2seq checkpoint (observer 1)")
    parser.add_argument("--task_state", default=None, help="dictionary + sentencepiece (e.g. TalkLip's "
                        "task_state.pt) when the checkpoint lacks them")
    parser.add_argument("--bbx_root", default=None, help="folder of <name>.npy face boxes (needed for --roi bbx)")
    parser.add_argument("--word_root", default=None, help="folder of LRS2 <name>.txt transcripts")
    parser.add_argument("--lrw", action="store_true", help="LRW word accuracy: the label is the folder name")
    add_device_arg(parser)
    add_decode_args(parser)
    add_clip_args(parser)
    args = parser.parse_args(argv)
    if args.roi == "bbx" and not args.bbx_root:
        parser.error("--roi bbx needs --bbx_root (or use --roi center)")
    if not args.lrw and not args.word_root:
        parser.error("--word_root is needed for WER (or --lrw for LRW accuracy)")
    return args


@dataclasses.dataclass
class LipReadingOptions:
    video_root: str                # synthesized <name>.mp4
    ckpt_path: str                 # AV-HuBERT seq2seq lip reader (observer 1)
    task_state: Optional[str] = None
    bbx_root: Optional[str] = None     # face boxes, for --roi bbx
    word_root: Optional[str] = None    # transcripts, for WER
    lrw: bool = False
    beam: int = 50
    max_len_a: float = 1.0
    max_len_b: int = 0
    lenpen: float = 1.0
    roi: str = "bbx"
    device: str = "auto"


def load_observer(opts: LipReadingOptions):
    model = load_avhubert(opts.ckpt_path, task_state_path=opts.task_state).to(resolve_device(opts.device))
    if model.codec is None:
        raise MediaError(f"{opts.ckpt_path} carries no dictionary/sentencepiece model: pass --task_state")
    return model


def metric(opts: LipReadingOptions, model=None):
    model = model or load_observer(opts)

    def run(name):
        boxes = load_boxes(opts.bbx_root, name) if opts.roi == "bbx" else None
        hyp = normalise(decode_clip(model, mouth_rois(f"{opts.video_root}/{name}.mp4", boxes), opts.beam,
                                    opts.max_len_a, opts.max_len_b, opts.lenpen))
        if opts.lrw:
            label = lrw_label(name)
            return {"acc": float(hyp == label), "acc_contains": float(label in hyp.split()), "hyp": hyp}
        ref = normalise(read_transcript(opts.word_root, name))
        words = len(ref.split())
        return {"wer": jiwer.wer(ref, hyp) if words else 0.0, "words": words, "hyp": hyp, "ref": ref}
    return run


def evaluate(opts: LipReadingOptions, run: ClipRun, names=None) -> dict:
    """Corpus WER (weighted by reference words), or LRW accuracy with ``opts.lrw``."""
    tag = f"{'lrw_acc' if opts.lrw else 'wer_avhubert'}_{opts.roi}_b{opts.beam}"

    def references(name):
        return ([f"{opts.bbx_root}/{name}.npy"] if opts.roi == "bbx" else []) + \
               ([] if opts.lrw else [f"{opts.word_root}/{name}.txt"])

    settings = {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("video_root", "bbx_root", "word_root",
                                                                              "ckpt_path", "task_state", "device")}
    settings.update(model=file_identity(opts.ckpt_path), task_state=file_identity(opts.task_state))
    return evaluate_clips(run, tag, metric(opts), opts.video_root, "--video_root", references=references,
                          settings=settings, weight=None if opts.lrw else "words", names=names)


def main(args) -> int:
    run = clip_run(args)
    summary = evaluate(from_args(LipReadingOptions, args), run)
    if args.lrw:
        print(f"LRW accuracy {summary['acc']:.4f} (label among decoded words {summary['acc_contains']:.4f}) "
              f"over {scored(summary)}")
    else:
        print(f"WER {summary['wer']:.4f} over {scored(summary)}")
    return exit_status([summary], run.allow_missing)


if __name__ == "__main__":
    run_cli(main, parse_args())
