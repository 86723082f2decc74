"""What the lip-reading loss reads each training clip against: its transcript, a pseudo-label, or nothing.

A clip with ``<word_root>/<name>.txt`` uses its transcript. A clip without one gets a pseudo-label:
the expert's own decoding of the clip's real mouth frames (the same mouth crops the lip loss shows
it), greedy or with a small beam. Pseudo-labels are cached next to the face boxes as
``<bbx_root>/<name>.pseudo.json`` (with the expert file and beam they came from), so they are
computed once and reused on resume; a different expert or beam recomputes them. A clip whose
pseudo-label is empty or cannot be made gets the other losses only; a failure (e.g. the video
unreadable) is not cached, so a later run tries again. With ``--no_lip_loss`` no clip
needs a label.
"""
import json
import os
from collections import Counter
from typing import Callable, Dict, List, Tuple

from tqdm import tqdm

from models.avhubert.reading import decode_clip, mouth_rois
from utils.corpus import read_transcript
from utils.errors import TalkLipError, one_line
from utils.fileio import atomic_output

TRANSCRIPT, PSEUDO, NONE = "transcript", "pseudo-label", "neither"
Label = Tuple[str, str]          # (kind, text)


def pseudo_label_path(bbx_root: str, name: str) -> str:
    return os.path.join(bbx_root, f"{name}.pseudo.json")


def clip_labels(names: List[str], word_root: str, bbx_root: str, video_root: str, expert, expert_id: list,
                beam: int, use_lip_loss: bool, log: Callable[[str], None], progress: bool = False
                ) -> Dict[str, Label]:
    """{name: (kind, text)} for every clip; computes and caches the missing pseudo-labels."""
    labels: Dict[str, Label] = {}
    todo = []
    for name in names:
        if not use_lip_loss:
            labels[name] = (NONE, "")
        elif word_root and os.path.isfile(os.path.join(word_root, f"{name}.txt")):
            labels[name] = (TRANSCRIPT, read_transcript(word_root, name))
        else:
            cached = _read_cache(pseudo_label_path(bbx_root, name), expert_id, beam)
            if cached is None:
                todo.append(name)
            else:
                labels[name] = (PSEUDO, cached) if cached else (NONE, "")
    if todo:
        log(f"pseudo-labelling {len(todo)} clips without a transcript (expert decoding, beam {beam}); "
            f"cached in {bbx_root}")
        for name in tqdm(todo, desc="pseudo-labels", unit="clip", disable=not progress):
            try:
                text = decode_clip(expert, mouth_rois(os.path.join(video_root, f"{name}.mp4")), beam=beam)
            except (TalkLipError, ValueError, RuntimeError) as exc:
                # not cached: the next run tries again (the video may be back by then)
                log(f"pseudo-label of {name} failed ({one_line(exc)}): it trains without the lip loss in this run")
                labels[name] = (NONE, "")
                continue
            text = " ".join(text.split())
            with atomic_output(pseudo_label_path(bbx_root, name)) as tmp, open(tmp, "w") as handle:
                json.dump({"text": text, "expert": expert_id, "beam": beam}, handle)
            labels[name] = (PSEUDO, text) if text else (NONE, "")
    return labels


def _read_cache(path: str, expert_id: list, beam: int):
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    if data.get("expert") != expert_id or data.get("beam") != beam or not isinstance(data.get("text"), str):
        return None
    return data["text"]


def label_counts(labels: Dict[str, Label], names: List[str]) -> str:
    """'12 with transcripts, 3 with pseudo-labels, 1 with neither'."""
    counts = Counter(labels[n][0] for n in names)
    return (f"{counts[TRANSCRIPT]} with transcripts, {counts[PSEUDO]} with pseudo-labels, "
            f"{counts[NONE]} with neither")
