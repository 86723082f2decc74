"""Extract each clip's audio track as 16 kHz mono 16-bit WAV: <audio_root>/<speaker>/<clip>.wav.

    python -m preparation.audio_extract --filelist F --video_root V --audio_root A [--rank 1 --nshard 4]
"""
import argparse
import os

from preparation.runner import add_shard_args, run_shard
from utils.cli import non_negative_int, positive_int
from utils.audio import AUDIO_RATE_HZ
from utils.errors import run_cli
from utils.video import extract_audio


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shard_args(parser)
    parser.add_argument("--audio_root", "--save_root", dest="audio_root", required=True,
                        help="output folder for <speaker>/<clip>.wav (--save_root is the original name)")
    parser.add_argument("--gpu", type=non_negative_int, default=0, help="accepted for compatibility; unused")
    parser.add_argument("--batch_size", type=positive_int, default=32, help="accepted for compatibility; unused")
    return parser.parse_args(argv)


def main(args) -> int:
    def wav_path(name):
        return os.path.join(args.audio_root, f"{name}.wav")

    def process(name):
        extract_audio(os.path.join(args.video_root, f"{name}.mp4"), wav_path(name), AUDIO_RATE_HZ)

    return run_shard(args, "audio_extract", args.audio_root, process, lambda n: [wav_path(n)])


if __name__ == "__main__":
    run_cli(main, parse_args())
