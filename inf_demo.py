"""Dub a face video (or a still image) with new speech using a TalkLip checkpoint.

    python inf_demo.py --video_path face.mp4 --wav_path speech.wav --ckpt_path talklip.pth --save_path out
    python inf_demo.py --jobs dubs.csv --ckpt_path talklip.pth        # many dubs, the model loaded once

Writes <save_path>.mp4 (H.264 + AAC) at the video's frame rate and size, as long as the speech. With
--jobs, every row of a CSV (header: video,speech,output[,follow][,reference]) or JSON-lines file is
dubbed (dubbing/jobs.py); rows already done are skipped, failed ones listed beside the file (exit 3).
"""
import argparse
import os
import sys
import time

import numpy as np

from face_detection import DEFAULT_S3FD_PATH, S3FD_HELP, build_detector
from preparation.runner import EXIT_SOME_FAILED
from cli_flags import add_tracking_args, tracking_options
from dubbing import SynthesisOptions, dub
from dubbing.options import PASTE_MODES, MouthRegion
from dubbing.jobs import failures_file, read_jobs, run_jobs
from dubbing.reference import check_reference
from dubbing.speech import AUDIO_WINDOW_OVERLAP
from models.talklip import load_talklip, prepare_for_inference
from utils.cli import (add_device_arg, add_ignored_flags, fraction_below, int_at_least, int_in_range, non_negative_int,
                       note_ignored_flags, positive_int)
from utils.device import PRECISIONS, autocast_dtype, resolve_device
from utils.errors import TalkLipError, run_cli
from utils.fileio import mp4_output, refuse_input_as_output


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video_path", default=None, help="face video (any fps, size) or a still image")
    parser.add_argument("--wav_path", default=None, help="speech: any audio format, rate and channel count")
    parser.add_argument("--jobs", default=None,
                        help="dub every row of this CSV or .jsonl file instead (video, speech, output, optional "
                             "follow and reference; paths relative to the file's folder), the model loaded once")
    parser.add_argument("--rank", type=positive_int, default=None,
                        help="--jobs: this shard of the rows, 1..nshard (default: torchrun RANK or SLURM_PROCID + 1)")
    parser.add_argument("--nshard", type=positive_int, default=None,
                        help="--jobs: number of shards (default: WORLD_SIZE or SLURM_NTASKS, else 1)")
    parser.add_argument("--ckpt_path", required=True, help="TalkLip generator checkpoint (.pth)")
    parser.add_argument("--save_path", default="tmp", help="output path; .mp4 is appended when missing")
    add_device_arg(parser)
    add_ignored_flags(parser)
    parser.add_argument("--s3fd_path", default=None, help=S3FD_HELP)
    parser.add_argument("--batch_size", type=positive_int, default=None,
                        help="faces per generator batch (default: 4 in fp32 on the CPU, ~100 MB lighter than 8 and nearly as fast; else 8)")
    parser.add_argument("--chunk_frames", type=positive_int, default=32,
                        help="frames cropped, generated and pasted at a time, fewer for large frames "
                             "(at most 24 MB of frames: 8 at 720p; memory grows with it)")
    add_tracking_args(parser, smooth_window=5, dubbing=True)
    parser.add_argument("--precision", "--dtype", dest="precision", choices=PRECISIONS, default="auto",
                        help="generator precision: auto (bf16 where the CPU or GPU computes bf16 in hardware, "
                             "else fp32), fp32 (as the original), bf16, or fp16 (GPU only)")
    parser.add_argument("--paste", choices=PASTE_MODES, default="mouth",
                        help="what of the generated face goes into the frame: mouth (the mouth and jaw region, "
                             "faded into the frame's own pixels: the eyes and brows stay sharp) or face (the "
                             "whole face box, as the original)")
    parser.add_argument("--mask_top", type=fraction_below(1.0), default=MouthRegion.top,
                        help="--paste mouth: the region starts this far down the face box (fraction of its height)")
    parser.add_argument("--mask_side", type=fraction_below(0.5), default=MouthRegion.side,
                        help="--paste mouth: the region keeps this far from either side of the box (fraction of "
                             "its width)")
    parser.add_argument("--mask_feather", type=fraction_below(1.0), default=MouthRegion.feather,
                        help="--paste mouth: it fades into the frame over this fraction of the box height")
    parser.add_argument("--reference", type=reference_choice, default="own",
                        help="the face the generator is shown whole: own (each frame's own, as the original: the "
                             "source's mouth can leak into the dub), first (the first frame with the face), closed "
                             "(the frame whose mouth is most closed) or a frame number N")
    parser.add_argument("--crf", type=crf_value, default=18,
                        help="H.264 quality of the dub (x264 crf, 0-51: lower is better and larger; at 18 an untouched "
                             "720p region reads ~39.7 dB against the source, at 16 ~41)")
    parser.add_argument("--blend", type=non_negative_int, default=0,
                        help="--paste face: feather the pasted face into the frame over this many pixels "
                             "(0: hard paste)")
    parser.add_argument("--audio_window", type=int_at_least(2 * AUDIO_WINDOW_OVERLAP + 1, f" (windows overlap by {AUDIO_WINDOW_OVERLAP} frames on each side)"), default=1500,
                        help="audio frames (25 Hz) the encoder sees at once; longer audio is windowed")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
    parser.add_argument("--strict", action="store_true",
                        help="fail (and write nothing) when the video's frames stop before its stream's declared end")
    args = parser.parse_args(argv)
    if not args.jobs and not (args.video_path and args.wav_path):
        parser.error("give --video_path and --wav_path (or --jobs FILE for many dubs)")
    return args


crf_value = int_in_range(0, 51)


def reference_choice(text: str) -> str:
    """argparse type of --reference: refused in argparse's one-line usage error."""
    try:
        return check_reference(text)
    except TalkLipError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def synthesis_options(args, device) -> SynthesisOptions:
    return SynthesisOptions(batch_size=args.batch_size, chunk_frames=args.chunk_frames, feather=args.blend,
                            paste=args.paste, region=MouthRegion(args.mask_top, args.mask_side, args.mask_feather),
                            reference=args.reference, crf=args.crf,
                            audio_window=args.audio_window, device=str(device), progress=not args.no_progress,
                            dtype=autocast_dtype(args.precision, device))


def main_jobs(args, device) -> int:
    """--jobs: this shard's rows, one model; exit 3 when a row failed (as preprocessing)."""
    jobs = read_jobs(args.jobs)
    failures = failures_file(args.jobs, args.rank, args.nshard)
    detector = build_detector(args.s3fd_path, device)          # a missing --s3fd_path is said before the model loads
    generator = prepare_for_inference(load_talklip(args.ckpt_path, device), autocast_dtype(args.precision, device))
    started = time.time()
    summary = run_jobs(jobs, generator, detector, synthesis_options(args, device), tracking_options(args, dubbing=True),
                       failures, args.rank, args.nshard, progress=not args.no_progress)
    print(f"dubbed {summary.done} jobs ({summary.frames} frames) in {time.time() - started:.1f}s, "
          f"{summary.skipped} already done, {len(summary.failed)} failed"
          + (f": listed in {failures}" if summary.failed else ""), file=sys.stderr)
    return EXIT_SOME_FAILED if summary.failed else 0


def output_path(save_path: str, video_path: str, inputs) -> str:
    """The .mp4 to write: ``save_path`` (+ .mp4), or <folder>/<video name>.mp4 when it names a folder
    (ends with '/' or exists as one). Never one of ``inputs``."""
    out = mp4_output(save_path, video_path)
    refuse_input_as_output(out, inputs, "--save_path")
    return out


def untouched_reason(info, args) -> str:
    """Why frames passed through undubbed: the detector's misses, the gap rule, and what to try."""
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[1], info.with_face.astype(np.int8), [1]]))))[::2]
    return (f"{info.detection_misses} of the detector's {info.detected_frames} looks found no face, and "
            f"{len(runs)} stretch(es) without it (the longest {runs.max() if len(runs) else 0} frames) outlasted "
            f"--max_gap {args.max_gap:g} s"
            + ("; OpenCV's cascade (no s3fd.pth) misses turned, dark and small faces: give --s3fd_path"
               if not args.s3fd_path and not os.path.isfile(DEFAULT_S3FD_PATH) else ""))


def main(args) -> int:
    note_ignored_flags(args)
    device = resolve_device(args.device)
    if args.jobs:
        return main_jobs(args, device)
    out_path = output_path(args.save_path, args.video_path, [args.video_path, args.wav_path])
    detector = build_detector(args.s3fd_path, device)          # a missing --s3fd_path is said before the model loads
    generator = prepare_for_inference(load_talklip(args.ckpt_path, device), autocast_dtype(args.precision, device))
    tracking = tracking_options(args, dubbing=True)
    opts = synthesis_options(args, device)
    started = time.time()
    info = dub(generator, args.video_path, args.wav_path, out_path, detector, opts, tracking, strict=args.strict)
    if info.damaged:
        print(f"warning: {args.video_path}'s frames stop after {info.decoded_frames} "
              f"of its {info.declared_s:.2f} s video stream (a damaged file?); the dub uses those "
              f"(--strict makes this an error)", file=sys.stderr)
    if info.framing_note:
        print(f"note: {info.framing_note}", file=sys.stderr)
    if info.far_from_point:
        print(f"warning: no detected face lies near the --follow point {args.follow}: the nearest face was dubbed "
              f"(the detector may have missed the one there; check the output, or try the S3FD detector)",
              file=sys.stderr)
    untouched = info.frames - info.frames_with_face
    print(f"wrote {out_path}: {info.frames} frames at {info.fps:g} fps ({info.duration_s:.2f} s) "
          f"in {time.time() - started:.1f}s; the face detector ran on {info.detected_frames} key frames, the face "
          f"was tracked on {info.frames_with_face}"
          + (f"; {untouched} frames without the face passed through untouched: {untouched_reason(info, args)}"
             if untouched else "")
          + (f"; the reference face is frame {info.reference_frame}'s" if info.reference_frame is not None else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
