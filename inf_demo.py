"""Dub a face video (or a still image) with new speech using a TalkLip checkpoint.

    python inf_demo.py --video_path face.mp4 --wav_path speech.wav --ckpt_path talklip.pth --save_path out

Writes <save_path>.mp4 (H.264 + AAC) at the video's frame rate and size, as long as the speech.
"""
import argparse
import sys
import time

from face_detection import DEFAULT_S3FD_PATH, build_detector
from models.synthesis import SynthesisOptions, dub
from models.talklip import load_talklip
from utils.device import add_device_arg, resolve_device
from utils.errors import run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video_path", required=True, help="face video (any fps, size) or a still image")
    parser.add_argument("--wav_path", required=True, help="speech: any audio format, rate and channel count")
    parser.add_argument("--ckpt_path", required=True, help="TalkLip generator checkpoint (.pth)")
    parser.add_argument("--save_path", default="tmp", help="output path; .mp4 is appended when missing")
    add_device_arg(parser)
    parser.add_argument("--avhubert_root", default=None, help="ignored: AV-HuBERT is built in")
    parser.add_argument("--s3fd_path", default=DEFAULT_S3FD_PATH, help="S3FD weights for face detection")
    parser.add_argument("--batch_size", type=int, default=32, help="faces per generator batch")
    parser.add_argument("--chunk_frames", type=int, default=64, help="frames processed at a time")
    parser.add_argument("--smooth_window", type=int, default=5, help="average face boxes over N frames (1: off)")
    parser.add_argument("--blend", type=int, default=0,
                        help="feather the pasted face into the frame over this many pixels (0: hard paste)")
    parser.add_argument("--audio_window", type=int, default=1500,
                        help="audio frames (25 Hz) the encoder sees at once; longer audio is windowed")
    parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


def main(args) -> int:
    if args.avhubert_root:
        print("note: --avhubert_root is ignored; AV-HuBERT is built into talklip", file=sys.stderr)
    device = resolve_device(args.device)
    out_path = args.save_path if args.save_path.endswith(".mp4") else f"{args.save_path}.mp4"
    generator = load_talklip(args.ckpt_path, device)
    detector = build_detector(args.s3fd_path, device)
    opts = SynthesisOptions(batch_size=args.batch_size, chunk_frames=args.chunk_frames, feather=args.blend,
                            audio_window=args.audio_window, device=str(device), progress=not args.no_progress)
    started = time.time()
    info = dub(generator, args.video_path, args.wav_path, out_path, detector, opts, args.smooth_window)
    print(f"wrote {out_path}: {info['frames']} frames at {info['fps']:g} fps ({info['duration_s']:.2f} s) "
          f"in {time.time() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
