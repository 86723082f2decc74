"""Write a file list (one <relative path without .mp4> per line) of the videos under a folder.

    python -m preparation.make_filelist --video_root LRW/lipread_mp4 --split test --out datalist/lrw_test.txt
    python -m preparation.make_filelist --video_root LRS2/main --out datalist/lrs2_all.txt

For LRW, ``--split test`` keeps <WORD>/test/<WORD>_<NNNNN>: all 50 test clips of each of the
500 words, the 25,000 clips the paper evaluates on.
"""
import argparse
import os
import sys

from utils.errors import TalkLipError, run_cli
from utils.fileio import atomic_output


def list_videos(video_root: str, split: str = "") -> list:
    if not os.path.isdir(video_root):
        raise TalkLipError(f"video folder {video_root} does not exist: pass --video_root")
    names = []
    for folder, _, files in os.walk(video_root):
        for file in files:
            if not file.endswith(".mp4"):
                continue
            rel = os.path.relpath(os.path.join(folder, file), video_root)[:-len(".mp4")]
            if split and split not in rel.split(os.sep)[:-1]:
                continue
            names.append(rel.replace(os.sep, "/"))
    if not names:
        raise TalkLipError(f"no .mp4 files{' in a ' + split + ' folder' if split else ''} under "
                           f"{video_root}: check --video_root and --split")
    return sorted(names)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video_root", required=True, help="folder to search for .mp4 files")
    parser.add_argument("--split", default="", help="keep only videos inside a folder of this name (LRW: test)")
    parser.add_argument("--out", required=True, help="file list to write")
    return parser.parse_args(argv)


def main(args) -> int:
    names = list_videos(args.video_root, args.split)
    with atomic_output(args.out) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(f"{n}\n" for n in names)
    print(f"wrote {len(names)} names to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
