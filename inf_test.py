"""Synthesize a test set with a TalkLip checkpoint for the paper's metrics.

    python inf_test.py --filelist F --video_root V --audio_root A --bbx_root B --save_root OUT --ckpt_path G.pth

For each <name> in the file list: V/<name>.mp4, A/<name>.wav and B/<name>.npy give
OUT/<name>.mp4, every frame regenerated with the first frame as reference (LRS2 and LRW layouts).
"""
import argparse
import os

from dubbing import SynthesisOptions, synthesize_test_clip
from models.talklip import load_talklip, prepare_for_inference
from preparation.runner import run_shard
from utils.cli import add_device_arg, add_ignored_flags, note_ignored_flags, positive_int
from utils.corpus import load_boxes
from utils.device import resolve_device
from utils.errors import TalkLipError, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filelist", required=True, help="text file of sample names (LRS2 or LRW form)")
    parser.add_argument("--video_root", required=True, help="folder of <name>.mp4")
    parser.add_argument("--audio_root", required=True, help="folder of <name>.wav (audio_extract output)")
    parser.add_argument("--bbx_root", required=True, help="folder of <name>.npy face boxes (bbx_extract output)")
    parser.add_argument("--save_root", required=True, help="output folder for <name>.mp4")
    parser.add_argument("--ckpt_path", required=True, help="TalkLip generator checkpoint (.pth)")
    parser.add_argument("--check", action="store_true", help="skip samples already synthesized in save_root")
    add_device_arg(parser)
    add_ignored_flags(parser)
    parser.add_argument("--batch_size", type=positive_int, default=32, help="faces per generator batch")
    parser.add_argument("--rank", type=positive_int, default=None, help="this shard, 1..nshard (also from torchrun/SLURM)")
    parser.add_argument("--nshard", type=positive_int, default=None, help="number of shards")
    parser.add_argument("--no_progress", action="store_true", help="hide the per-clip progress bar")
    return parser.parse_args(argv)


def main(args) -> int:
    note_ignored_flags(args)
    if os.path.realpath(args.save_root) == os.path.realpath(args.video_root):
        raise TalkLipError(f"--save_root {args.save_root} is the --video_root: the synthesized clips would "
                           f"overwrite the originals; choose another folder")
    device = resolve_device(args.device)
    generator = prepare_for_inference(load_talklip(args.ckpt_path, device))
    opts = SynthesisOptions(batch_size=args.batch_size, device=str(device), progress=False)

    def out_path(name):
        return os.path.join(args.save_root, f"{name}.mp4")

    def process(name):
        synthesize_test_clip(generator, os.path.join(args.video_root, f"{name}.mp4"),
                             os.path.join(args.audio_root, f"{name}.wav"), load_boxes(args.bbx_root, name),
                             out_path(name), opts)

    args.overwrite = not args.check
    return run_shard(args, "inf_test", args.save_root, process, lambda n: [out_path(n)])


if __name__ == "__main__":
    run_cli(main, parse_args())
