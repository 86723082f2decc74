"""Run one shard of a per-file job: resumable, atomic, failures logged without stopping.

Each script supplies ``process(name)`` that writes the outputs of one sample (atomically)
and ``outputs(name)`` listing them; a sample whose outputs all exist is skipped unless
``overwrite``. A sample that fails is logged to a failures list and the shard goes on.
"""
import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List, Sequence, Tuple

from tqdm import tqdm

from utils.cli import positive_int
from utils.errors import one_line
from utils.fileio import atomic_output, read_filelist, resolve_shard, shard_items

EXIT_SOME_FAILED = 3


@dataclass
class ShardSummary:
    done: int = 0
    skipped: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)

    def line(self, tool: str, rank: int, nshard: int) -> str:
        return (f"{tool} shard {rank + 1}/{nshard}: {self.done} processed, {self.skipped} already done, "
                f"{len(self.failed)} failed")


def add_shard_args(parser: argparse.ArgumentParser) -> None:
    """The sharding and resume flags shared by the preprocessing scripts."""
    parser.add_argument("--filelist", required=True, help="text file with one <speaker>/<clip> per line")
    parser.add_argument("--video_root", required=True, help="folder holding <speaker>/<clip>.mp4")
    parser.add_argument("--rank", type=positive_int, default=None,
                        help="this shard, 1..nshard (default: torchrun RANK or SLURM_PROCID + 1, else 1)")
    parser.add_argument("--nshard", type=positive_int, default=None,
                        help="number of shards (default: WORLD_SIZE or SLURM_NTASKS, else 1)")
    parser.add_argument("--overwrite", action="store_true", help="redo samples whose outputs exist")


def run_shard(args, tool: str, out_root: str, process: Callable[[str], None],
              outputs: Callable[[str], Sequence[str]]) -> int:
    """Process this shard's samples; print a summary; return 0, or 3 if any sample failed."""
    names = read_filelist(args.filelist)
    rank, nshard = resolve_shard(args.rank, args.nshard)
    shard = shard_items(names, rank, nshard)
    summary = ShardSummary()
    started = time.time()
    for name in tqdm(shard, desc=f"{tool} {rank + 1}/{nshard}", unit="clip", file=sys.stderr,
                     disable=None):
        if not args.overwrite and all(os.path.isfile(p) for p in outputs(name)):
            summary.skipped += 1
            continue
        try:
            process(name)
        except Exception as exc:          # one bad sample must not stop a long shard
            reason = one_line(exc)
            summary.failed.append((name, reason))
            print(f"failed: {name}: {reason}", file=sys.stderr)
        else:
            summary.done += 1
    failures_path = os.path.join(out_root, f"failures_{tool}_{rank + 1}of{nshard}.txt")
    if summary.failed:
        with atomic_output(failures_path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(f"{name}\t{reason}\n" for name, reason in summary.failed)
    elif os.path.exists(failures_path):
        os.remove(failures_path)
    print(summary.line(tool, rank, nshard) + f" in {time.time() - started:.1f}s"
          + (f"; failures listed in {failures_path}" if summary.failed else ""), file=sys.stderr)
    return EXIT_SOME_FAILED if summary.failed else 0
