"""What every metric shares: the clip list, per-clip caching (so an interrupted evaluation resumes),
progress, per-clip failures that do not stop the run, and counting what was scored.

Each metric module has an options dataclass (what it measures and with which model) and an
``evaluate(options, run, names=None)`` function; its CLI turns argparse flags into both with
:func:`from_args`. ``ClipRun`` holds what is common to all: the clip list, the cache, the JSON output.

A cached per-clip result is reused only while everything it was computed from is unchanged: the
synthesized video, the reference files (originals, boxes, transcripts), the metric's settings and
its model file, each identified by path, size and modification time.
"""
import argparse
import dataclasses
import hashlib
import json
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from utils.errors import TalkLipError, one_line
from utils.fileio import atomic_output, read_filelist

PARTIAL_EXIT = 3       # exit status of a CLI whose result covers only some of the listed clips


@dataclasses.dataclass
class ClipRun:
    """Which clips are scored, where per-clip results are cached, where the summary goes."""
    filelist: Optional[str] = None
    cache_dir: Optional[str] = None        # default: <synthesized folder>/.eval_cache
    out_json: Optional[str] = None
    progress: bool = True
    allow_missing: bool = False            # a result over some of the listed clips is not an error


def add_clip_args(parser: argparse.ArgumentParser, filelist_help: Optional[str] = None) -> None:
    """--filelist (required unless ``filelist_help`` describes its default), --cache_dir, --out_json,
    --no_progress, --allow_missing."""
    parser.add_argument("--filelist", required=filelist_help is None, default=None,
                        help=filelist_help or "text file of sample names (first token per line)")
    parser.add_argument("--cache_dir", default=None,
                        help="per-clip results are kept here so a rerun skips finished clips; a result is "
                             "recomputed when its video, reference files, settings or model changed "
                             "(default: <synthesized folder>/.eval_cache)")
    parser.add_argument("--out_json", default=None, help="also write the summary and per-clip values here")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--allow_missing", action="store_true",
                        help="exit 0 when some listed clips are missing or fail (the mean is over the rest)")


def from_args(options_class, args):
    """``options_class`` filled from the argparse namespace fields of the same names."""
    return options_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(options_class)
                            if hasattr(args, f.name)})


def clip_run(args) -> ClipRun:
    return ClipRun(filelist=args.filelist, cache_dir=args.cache_dir, out_json=args.out_json,
                   progress=not args.no_progress, allow_missing=args.allow_missing)


def file_identity(path: Optional[str]) -> list:
    """[absolute path, size, mtime in ns] of a file ([path, None, None] when absent or not given)."""
    if not path:
        return [None, None, None]
    try:
        stat = os.stat(path)
    except OSError:
        return [os.path.abspath(path), None, None]
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def cache_key(settings: Dict, files: Sequence[str]) -> str:
    text = json.dumps({"settings": settings, "files": [file_identity(p) for p in files]}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def weighted_summary(rows: List[Dict], weight: Optional[str]) -> Dict[str, float]:
    """Mean of every numeric field over clips, weighted by ``rows[i][weight]`` when given."""
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and k != weight and k != "name"]
    w = np.array([r[weight] for r in rows], np.float64) if weight else np.ones(len(rows))
    out = {k: float(np.sum([r[k] * wi for r, wi in zip(rows, w)]) / w.sum()) for k in keys}
    if weight:
        out[weight] = int(w.sum())
    return out


def evaluate_clips(run: ClipRun, tag: str, per_clip: Callable[[str], Dict], root: str, root_flag: str,
                   references: Callable[[str], List[str]] = lambda name: [],
                   settings: Optional[Dict] = None, weight: Optional[str] = None, names: Optional[List[str]] = None,
                   summarize: Optional[Callable[[Dict], None]] = None) -> Dict:
    """Run ``per_clip(name)`` over the clips and summarise.

    ``<root>/<name>.mp4`` is the scored file (a missing one is counted as missing, naming ``root_flag``),
    ``references(name)`` the other files a clip's number depends on, ``settings`` the metric's
    settings (include the model file's :func:`file_identity`). Returns {'metric', 'listed', 'clips'
    (scored), 'missing', 'failed', 'complete', <field>: mean over scored clips (weighted by
    ``weight``), 'per_clip'}, amended by ``summarize(summary)``; ``run.out_json`` gets it too."""
    names = names if names is not None else read_filelist(run.filelist)
    videos = [os.path.join(root, f"{name}.mp4") for name in names]
    cache = os.path.join(run.cache_dir or os.path.join(root, ".eval_cache"), tag)
    settings = settings or {}
    rows, failed, missing = [], [], []
    bar = tqdm(list(zip(names, videos)), desc=tag, unit="clip", disable=not run.progress, file=sys.stderr)
    for name, path in bar:
        if not os.path.isfile(path):
            missing.append(name)
            continue
        key = cache_key(settings, [path] + list(references(name)))
        cached = os.path.join(cache, f"{name}.json")
        if os.path.isfile(cached):
            try:
                with open(cached) as handle:
                    row = json.load(handle)
            except (OSError, ValueError):
                row = {}
            if row.pop("_key", None) == key:
                rows.append(row)
                continue
        try:
            row = {"name": name, **per_clip(name)}
        except (TalkLipError, ValueError, RuntimeError) as exc:
            tqdm.write(f"{tag}: {name} failed: {one_line(exc)}", file=sys.stderr)
            failed.append(name)
            continue
        with atomic_output(cached) as tmp, open(tmp, "w") as handle:
            json.dump({**row, "_key": key}, handle)
        rows.append(row)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        print(f"{tag}: {len(missing)} of {len(names)} listed clips have no video ({shown}): check {root_flag}",
              file=sys.stderr)
    if not rows:
        raise TalkLipError(f"{tag}: no clip of the {len(names)} listed could be scored ({len(missing)} missing, "
                           f"{len(failed)} failed; see the messages above)")
    summary = {"metric": tag, "listed": len(names), "clips": len(rows), "missing": missing, "failed": failed,
               "complete": not missing and not failed, **weighted_summary(rows, weight), "per_clip": rows}
    if summarize is not None:
        summarize(summary)
    if run.out_json:
        with atomic_output(run.out_json) as tmp, open(tmp, "w") as handle:
            json.dump(summary, handle, indent=1)
    return summary


def scored(summary: Dict) -> str:
    """'8 clips' or '7 of 8 listed clips (1 missing, 0 failed)': goes next to every printed number."""
    if summary["complete"]:
        return f"{summary['clips']} clips"
    return (f"{summary['clips']} of {summary['listed']} listed clips ({len(summary['missing'])} missing, "
            f"{len(summary['failed'])} failed)")


def exit_status(summaries: Sequence[Dict], allow_missing: bool) -> int:
    """0, or PARTIAL_EXIT with a one-line error when a result covers only some listed clips."""
    partial = [s for s in summaries if not s["complete"]]
    if not partial or allow_missing:
        return 0
    print(f"error: {partial[0]['metric']} scored {scored(partial[0])}: fix or remove those clips, or pass "
          f"--allow_missing to accept a mean over the rest", file=sys.stderr)
    return PARTIAL_EXIT
