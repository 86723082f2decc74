"""A corpus on disk, in LRS2's layout: where a clip's files are, its face boxes and its transcript.

Training, test synthesis, evaluation and the quickstart all read clips through here. Sample names
come from file lists (``utils.fileio.read_filelist``, which refuses names that leave their folder).
"""
import os

import numpy as np

from utils.errors import MediaError


def load_boxes(bbx_root: str, name: str) -> np.ndarray:
    """The (N, 4) int64 face boxes of a clip (``<bbx_root>/<name>.npy``, written by bbx_extract)."""
    path = os.path.join(bbx_root, f"{name}.npy")
    if not os.path.isfile(path):
        raise MediaError(f"face boxes {path} do not exist: run preprocess.sh (bbx_extract) for this clip")
    try:
        boxes = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise MediaError(f"{path} is not a plain array of face boxes (damaged, or holds other data): "
                         f"delete it and rerun bbx_extract for this clip") from None
    if not isinstance(boxes, np.ndarray) or boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0 \
            or not np.issubdtype(boxes.dtype, np.number):
        raise MediaError(f"{path} holds {getattr(boxes, 'shape', '?')} {getattr(boxes, 'dtype', '')} values, "
                         f"not frames x 4 face boxes: delete it and rerun bbx_extract for this clip")
    return boxes.astype(np.int64)


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
