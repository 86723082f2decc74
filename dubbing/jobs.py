"""Many dubs in one process (``inf_demo.py --jobs FILE``): the model is loaded once, every row is dubbed.

A jobs file is a CSV with a header row, or JSON lines (``.jsonl``), with per row ``video``, ``speech`` and
``output``, and optionally ``follow`` ('X,Y' or 'largest') and ``reference`` (``--reference``'s values);
relative paths are read from the jobs file's folder; ``output`` follows ``--save_path``'s rule (.mp4 added when
it lacks it; a folder gets <folder>/<video name>.mp4). Before any row runs, rows that would write the same
output, or whose output is another row's input, are refused in one line naming them. A row whose output is
already there, complete, is skipped (a rerun resumes); a row that fails is listed in the failures file and the
others go on; the failures file is written also when the run is stopped (SIGTERM, SIGHUP, Ctrl-C).
``rank``/``nshard`` (or torchrun's and SLURM's variables) split the rows across processes and machines,
as preprocessing splits its clips.
"""
import csv
import dataclasses
import io
import json
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from tqdm import tqdm

from dubbing.dub import dub
from dubbing.options import SynthesisOptions
from dubbing.reference import check_reference
from face_detection.tracking import TrackingOptions, parse_follow
from utils.errors import MediaError, TalkLipError, one_line
from utils.fileio import atomic_output, mp4_output, read_text, refuse_input_as_output, resolve_shard, shard_items
from utils.video import check_complete

COLUMNS = ("video", "speech", "output")
OPTIONAL_COLUMNS = ("follow", "reference")


@dataclass(frozen=True)
class Job:
    row: int                         # 1-based row of the jobs file (after a CSV's header)
    video: str
    speech: str
    output: str
    follow: Optional[str] = None
    reference: Optional[str] = None


@dataclass
class JobsSummary:
    done: int = 0
    skipped: int = 0
    frames: int = 0
    failed: List[Tuple[Job, str]] = field(default_factory=list)


def read_jobs(path: str) -> List[Job]:
    """The rows of a jobs file; one that lacks a column or is not an object is refused in one line."""
    if not os.path.isfile(path):
        raise TalkLipError(f"jobs file {path} does not exist: check --jobs")
    folder = os.path.dirname(os.path.abspath(path))
    text = read_text(path, "jobs file")
    if path.lower().endswith((".jsonl", ".json")):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except ValueError as err:
                    raise TalkLipError(f"{path} line {number} is not JSON ({err}): one object per line") from None
    else:
        rows = list(enumerate(csv.DictReader(io.StringIO(text, newline="")), start=1))
    jobs = []
    for number, row in rows:
        if not isinstance(row, dict):
            raise TalkLipError(f"{path} row {number} is not an object with {', '.join(COLUMNS)}")
        missing = [c for c in COLUMNS if not str(row.get(c) or "").strip()]
        if missing:
            raise TalkLipError(f"{path} row {number} lacks {', '.join(missing)}: every row needs "
                               f"{', '.join(COLUMNS)} (and may give {', '.join(OPTIONAL_COLUMNS)})")
        where = lambda p: os.path.join(folder, os.path.expanduser(str(p).strip()))
        optional = {c: (str(row[c]).strip() or None) if row.get(c) not in (None, "") else None for c in OPTIONAL_COLUMNS}
        video = where(row["video"])
        jobs.append(Job(number, video, where(row["speech"]), mp4_output(where(row["output"]), video), **optional))
    if not jobs:
        raise TalkLipError(f"jobs file {path} has no rows: give {', '.join(COLUMNS)} per row")
    check_outputs(jobs, path)
    return jobs


def _rows(numbers: List[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:5]) + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")
    return f"row{'s' if len(numbers) > 1 else ''} {shown}"


def check_outputs(jobs: List[Job], path: str) -> None:
    """One line, before any row runs, when two rows write the same output (the second would count as done and
    never be made) or a row's output is another row's input (dubbing it would overwrite that input)."""
    key = lambda p: os.path.normcase(os.path.realpath(p))
    writers = {}
    for job in jobs:
        writers.setdefault(key(job.output), []).append(job.row)
    for out, rows in writers.items():
        if len(rows) > 1:
            raise TalkLipError(f"{path}: {_rows(rows)} all write {out}: give each row its own output")
    readers = {}
    for job in jobs:
        for source in (job.video, job.speech):
            readers.setdefault(key(source), []).append(job.row)
    for job in jobs:
        rows = sorted(set(readers.get(key(job.output), [])))
        if rows:
            raise TalkLipError(f"{path}: row {job.row}'s output {job.output} is an input of {_rows(rows)}: dubbing it "
                               f"would overwrite that input; give row {job.row} another output")


def is_done(job: Job) -> bool:
    """The row's output is there and whole (its video stream's packets reach its declared end)."""
    if not os.path.isfile(job.output):
        return False
    try:
        check_complete(job.output)
    except MediaError:
        return False
    return True


def run_jobs(jobs: List[Job], generator, detector, opts: SynthesisOptions, tracking: TrackingOptions,
             failures_path: str, rank: Optional[int] = None, nshard: Optional[int] = None,
             progress: bool = True) -> JobsSummary:
    """Dub this shard's rows; list the failed ones in ``failures_path`` (removed when none fails)."""
    rank0, total = resolve_shard(rank, nshard)
    shard = shard_items(jobs, rank0, total)
    summary = JobsSummary()
    bar = tqdm(shard, desc=f"dubbing {rank0 + 1}/{total}", unit="job", file=sys.stderr, disable=not progress)

    def frames_seen(stage: str, done: int, _total: int) -> None:
        if stage == "generating":
            bar.set_postfix_str(f"{summary.frames + done} frames")
    finished = False
    try:
        _run_rows(bar, summary, generator, detector, opts, tracking, frames_seen)
        finished = True
    finally:                                # also when stopped: the rows that failed so far are listed
        bar.close()
        if summary.failed:
            with atomic_output(failures_path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
                handle.writelines(f"row {job.row}\t{job.video}\t{job.speech}\t{job.output}\t{reason}\n"
                                  for job, reason in summary.failed)
        elif finished and os.path.exists(failures_path):
            os.remove(failures_path)
    return summary


def _run_rows(bar, summary: JobsSummary, generator, detector, opts: SynthesisOptions, tracking: TrackingOptions,
              frames_seen) -> None:
    for job in bar:
        if is_done(job):
            summary.skipped += 1
            continue
        try:
            row_tracking = tracking if job.follow is None else dataclasses.replace(tracking,
                                                                                   follow=parse_follow(job.follow))
            row_opts = dataclasses.replace(opts, progress=False, on_progress=frames_seen,
                                           reference=check_reference(job.reference) if job.reference else opts.reference)
            refuse_input_as_output(job.output, (job.video, job.speech))
            os.makedirs(os.path.dirname(job.output) or ".", exist_ok=True)
            result = dub(generator, job.video, job.speech, job.output, detector, row_opts, row_tracking)
        except Exception as exc:            # one bad row must not stop the others
            reason = one_line(exc)
            summary.failed.append((job, reason))
            tqdm.write(f"failed: row {job.row} ({job.video}): {reason}", file=sys.stderr)
            continue
        summary.done += 1
        summary.frames += result.frames
        bar.set_postfix_str(f"{summary.frames} frames")


def failures_file(jobs_path: str, rank: Optional[int], nshard: Optional[int]) -> str:
    """<jobs file>.failures_<rank>of<nshard>.txt, beside the jobs file."""
    rank0, total = resolve_shard(rank, nshard)
    return f"{os.path.splitext(jobs_path)[0]}.failures_{rank0 + 1}of{total}.txt"
