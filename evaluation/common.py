"""What every metric shares: the clip list, per-clip caching (so an interrupted evaluation resumes),
progress, per-clip failures that do not stop the run, and reading boxes and transcripts."""
import argparse
import json
import os
import sys
from typing import Callable, Dict, List, Optional

import numpy as np
from tqdm import tqdm

from utils.errors import MediaError, TalkLipError, one_line
from utils.fileio import atomic_output, read_filelist


def add_clip_args(parser: argparse.ArgumentParser, filelist_help: Optional[str] = None) -> None:
    """--filelist (required unless ``filelist_help`` describes its default), --cache_dir, --out_json,
    --no_progress."""
    parser.add_argument("--filelist", required=filelist_help is None, default=None,
                        help=filelist_help or "text file of sample names (first token per line)")
    parser.add_argument("--cache_dir", default=None,
                        help="per-clip results are kept here so a rerun skips finished clips "
                             "(default: <synthesized folder>/.eval_cache)")
    parser.add_argument("--out_json", default=None, help="also write the summary and per-clip values here")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")


def load_boxes(bbx_root: str, name: str) -> np.ndarray:
    path = os.path.join(bbx_root, f"{name}.npy")
    if not os.path.isfile(path):
        raise MediaError(f"face boxes {path} do not exist: run preparation/bbx_extract for this clip")
    boxes = np.load(path)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise MediaError(f"{path} holds {boxes.shape} values, not frames x 4 boxes: rerun bbx_extract")
    return boxes


def read_transcript(word_root: str, name: str) -> str:
    """The sentence of an LRS2 ``<name>.txt`` ('Text:  WORDS ...' on the first line)."""
    path = os.path.join(word_root, f"{name}.txt")
    if not os.path.isfile(path):
        raise MediaError(f"transcript {path} does not exist: pass the folder of LRS2 .txt files "
                         f"(usually the original main/ folder)")
    with open(path, encoding="utf-8") as handle:
        first = handle.readline().strip()
    return first.split(":", 1)[1].strip() if first.startswith("Text:") else first


def lrw_label(name: str) -> str:
    """The word of an LRW sample name (WORD/test/WORD_00001)."""
    return name.replace("\\", "/").split("/")[0].upper()


def weighted_summary(rows: List[Dict], weight: Optional[str]) -> Dict[str, float]:
    """Mean of every numeric field over clips, weighted by ``rows[i][weight]`` when given."""
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and k != weight and k != "name"]
    w = np.array([r[weight] for r in rows], np.float64) if weight else np.ones(len(rows))
    out = {k: float(np.sum([r[k] * wi for r, wi in zip(rows, w)]) / w.sum()) for k in keys}
    if weight:
        out[weight] = int(w.sum())
    return out


def evaluate_clips(args, tag: str, per_clip: Callable[[str], Dict], root: str, weight: Optional[str] = None,
                   names: Optional[List[str]] = None, summarize: Optional[Callable[[Dict], None]] = None) -> Dict:
    """Run ``per_clip(name)`` over the file list with caching (``args.cache_dir``, else
    ``<root>/.eval_cache``) and progress; return {'clips': n, 'failed': [...], 'per_clip': rows,
    <field>: corpus mean}, amended by ``summarize(summary)`` when given; ``--out_json`` too."""
    names = names if names is not None else read_filelist(args.filelist)
    cache = os.path.join(args.cache_dir or os.path.join(root, ".eval_cache"), tag)
    rows, failed = [], []
    bar = tqdm(names, desc=tag, unit="clip", disable=getattr(args, "no_progress", False), file=sys.stderr)
    for name in bar:
        cached = os.path.join(cache, f"{name}.json")
        if os.path.isfile(cached):
            with open(cached) as handle:
                rows.append(json.load(handle))
            continue
        try:
            row = {"name": name, **per_clip(name)}
        except (TalkLipError, ValueError, RuntimeError) as exc:
            tqdm.write(f"{tag}: {name} failed: {one_line(exc)}", file=sys.stderr)
            failed.append(name)
            continue
        with atomic_output(cached) as tmp, open(tmp, "w") as handle:
            json.dump(row, handle)
        rows.append(row)
    if not rows:
        raise TalkLipError(f"{tag}: no clip of {args.filelist} could be evaluated (see the messages above)")
    summary = {"metric": tag, "clips": len(rows), "failed": failed, **weighted_summary(rows, weight),
               "per_clip": rows}
    if summarize is not None:
        summarize(summary)
    if getattr(args, "out_json", None):
        with atomic_output(args.out_json) as tmp, open(tmp, "w") as handle:
            json.dump(summary, handle, indent=1)
    return summary
