"""Write a file list (one <relative path without .mp4> per line) of the videos under a folder.

    python -m preparation.make_filelist --video_root LRW/lipread_mp4 --split test --out datalist/lrw_test.txt
    python -m preparation.make_filelist --video_root LRS2/main --out datalist/lrs2_all.txt
    python -m preparation.make_filelist --video_root my_videos --split_dir my_lists [--valid_fraction 0.1]

Any folder of .mp4 files works, at any depth (no LRS2 speaker layout needed), linked folders followed (a
folder reached twice, as through a link loop, is listed once and the skip said); a path with white space
is refused up front (file lists are LRS2's format: a name, then optional columns). ``--split_dir`` writes
``filelist.txt`` (all), ``train.txt`` and ``valid.txt`` (a seeded random ``--valid_fraction``, at
least one clip each) there: what preprocess.sh and train.py read.

For LRW, ``--split test`` keeps <WORD>/test/<WORD>_<NNNNN>: all 50 test clips of each of the
500 words, the 25,000 clips the paper evaluates on.
"""
import argparse
import os
import sys

import numpy as np

from utils.cli import fraction, non_negative_int
from utils.errors import TalkLipError, run_cli, say_on_stderr
from utils.fileio import atomic_output


def list_videos(video_root: str, split: str = "") -> list:
    if not os.path.isdir(video_root):
        raise TalkLipError(f"video folder {video_root} does not exist: pass --video_root")
    names = []
    seen = {os.path.realpath(video_root)}
    for folder, dirs, files in os.walk(video_root, followlinks=True):
        for sub in list(dirs):             # linked folders (a speaker folder on another disk) are followed, once
            real = os.path.realpath(os.path.join(folder, sub))
            if real in seen:
                dirs.remove(sub)
                say_on_stderr(f"note: skipped {os.path.join(folder, sub)}: a link to {real}, which is listed already "
                              f"(a loop, or the same folder twice)")
            else:
                seen.add(real)
        for file in files:
            if not file.endswith(".mp4"):
                continue
            rel = os.path.relpath(os.path.join(folder, file), video_root)[:-len(".mp4")]
            if split and split not in rel.split(os.sep)[:-1]:
                continue
            if any(ch.isspace() for ch in rel):
                raise TalkLipError(f"{os.path.join(folder, file)} has white space in its path, and file lists "
                                   f"separate columns by white space: rename it (e.g. spaces to '_') and run again")
            names.append(rel.replace(os.sep, "/"))
    if not names:
        raise TalkLipError(f"no .mp4 files{' in a ' + split + ' folder' if split else ''} under "
                           f"{video_root}: check --video_root and --split")
    return sorted(names)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video_root", required=True, help="folder to search for .mp4 files")
    parser.add_argument("--split", default="", help="keep only videos inside a folder of this name (LRW: test)")
    parser.add_argument("--out", default=None, help="file list to write")
    parser.add_argument("--split_dir", default=None,
                        help="instead write filelist.txt, train.txt and valid.txt into this folder")
    parser.add_argument("--valid_fraction", type=fraction, default=0.1, help="share of clips in valid.txt")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the train/valid split")
    args = parser.parse_args(argv)
    if not (args.out or args.split_dir):
        parser.error("give --out FILE or --split_dir FOLDER")
    if not 0 < args.valid_fraction < 1:
        parser.error("--valid_fraction must lie between 0 and 1")
    return args


def write_list(path: str, names) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(f"{n}\n" for n in names)


def train_valid_split(names, valid_fraction: float, seed: int):
    """(train, valid): a seeded random share of the clips for validation, at least one in each."""
    if len(names) < 2:
        raise TalkLipError(f"{len(names)} video found: training needs at least 2 (one to train on, one to validate)")
    order = np.random.default_rng(seed).permutation(len(names))
    count = min(len(names) - 1, max(1, int(round(len(names) * valid_fraction))))
    valid = sorted(names[i] for i in order[:count])
    return sorted(set(names) - set(valid)), valid


def main(args) -> int:
    names = list_videos(args.video_root, args.split)
    if args.out:
        write_list(args.out, names)
        print(f"wrote {len(names)} names to {args.out}", file=sys.stderr)
    if args.split_dir:
        train, valid = train_valid_split(names, args.valid_fraction, args.seed)
        write_list(os.path.join(args.split_dir, "filelist.txt"), names)
        write_list(os.path.join(args.split_dir, "train.txt"), train)
        write_list(os.path.join(args.split_dir, "valid.txt"), valid)
        print(f"wrote {args.split_dir}/filelist.txt ({len(names)}), train.txt ({len(train)}), "
              f"valid.txt ({len(valid)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
