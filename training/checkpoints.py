"""What train.py writes and reads back: the original-format generator and discriminator files, the
resume state, and the choice of the state to resume from.

Every file goes through ``utils.checkpoint`` (atomic writes; ``weights_only`` reads, so a state file
someone hands you cannot run code). RNG states are stored as plain tensors and lists for that reason.
"""
import errno
import glob
import hashlib
import os
import random
import re
import shutil
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from utils.checkpoint import load_torch_file, save_atomic
from utils.errors import CheckpointError, TalkLipError

GENERATOR_FILE = "checkpoint_step{:09d}.pth"
DISCRIMINATOR_FILE = "disc_checkpoint_step{:09d}.pth"
STATE_FILE = "state_step{:09d}.pt"
PATTERNS = ("checkpoint_step*.pth", "disc_checkpoint_step*.pth", "state_step*.pt")
# Settings a resumed run must share with the run that wrote the state: they fix the model, the data
# order and what a step means. (config field, what to call it in the message)
RESUME_MUST_MATCH = (("batch_size", "--batch_size"), ("accum_steps", "--accum_steps"), ("world", "processes"),
                     ("generator_preset", "--generator_preset"), ("expert_sha256", "the expert (--avhubert_path)"))


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ RNG state
def rng_state() -> Dict:
    """Every global RNG, as tensors and plain lists (readable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}


def set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


# ------------------------------------------------------------------------------------ writing
def prepare_folder(folder: str) -> None:
    """Create the checkpoint folder, or refuse in one line: a file in its path, no permission, read-only."""
    try:
        os.makedirs(folder, exist_ok=True)
    except (NotADirectoryError, FileExistsError):
        raise TalkLipError(f"--checkpoint_dir {folder} cannot be a folder: a file stands in its path; "
                           f"choose another folder") from None
    except PermissionError:
        raise TalkLipError(f"--checkpoint_dir {folder} cannot be created (permission denied): "
                           f"choose a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TalkLipError(f"--checkpoint_dir {folder} is not writable: training writes its checkpoints and log "
                           f"there (a resume too); choose a writable folder or make this one writable")


class NoSpaceError(TalkLipError):
    """The checkpoint folder's disk is full."""


def _disk_full(exc: BaseException, folder: str) -> bool:
    """Did a write into ``folder`` fail for want of space? torch's zip writer reports a full disk as a
    RuntimeError ('unexpected pos ...'), not as the OSError beneath it."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if "No space left" in text:
        return True
    try:
        return isinstance(exc, RuntimeError) and shutil.disk_usage(folder).free < FULL_BELOW_BYTES
    except OSError:
        return False


FULL_BELOW_BYTES = 16 << 20      # a failed torch.save with less free than this is taken for a full disk


def _save(obj, path: str, folder: str) -> None:
    try:
        save_atomic(obj, path)
    except (OSError, RuntimeError) as exc:
        if _disk_full(exc, folder):
            raise NoSpaceError(f"no space left in {folder} to save {os.path.basename(path)}: free space there or "
                               f"choose another --checkpoint_dir (then resume)") from None
        raise


def prune(folder: str, keep_last: int) -> None:
    """Keep only the newest ``keep_last`` files of each kind."""
    for pattern in PATTERNS:
        files = sorted(glob.glob(os.path.join(folder, pattern)))     # glob skips the dot-file temporaries
        for old in files[:-keep_last]:
            os.remove(old)


def write_step(folder: str, step: int, generator_file: Dict, disc_file: Dict, state: Dict, keep_last: int) -> str:
    """checkpoint_stepN.pth and disc_checkpoint_stepN.pth (the original layout: state_dict, optimizer,
    global_step, global_epoch, plus the configs that rebuild the model) and state_stepN.pt; then
    only the newest ``keep_last`` of each kind are kept. When the disk is full, the older steps but the
    newest complete one (its state written) are removed and the write tried once more; still full:
    ``NoSpaceError``, one line naming the folder, and no file of this step is left half written."""
    gen_path = os.path.join(folder, GENERATOR_FILE.format(step))
    files = ((generator_file, gen_path), (disc_file, os.path.join(folder, DISCRIMINATOR_FILE.format(step))),
             (state, os.path.join(folder, STATE_FILE.format(step))))
    try:
        for obj, path in files:
            _save(obj, path, folder)
    except NoSpaceError:
        older = [s for s, _ in state_files(folder) if s != step]
        if len(older) < 2 and not any(os.path.exists(p) for _, p in files[:2]):
            raise
        prune(folder, 1)                  # room: only the newest complete step stays (and this one's)
        for obj, path in files:
            _save(obj, path, folder)
    prune(folder, keep_last)
    return gen_path


# ------------------------------------------------------------------------------------ reading
def state_files(folder: str) -> List[Tuple[int, str]]:
    """(step, path) of every state_stepN.pt in ``folder``, oldest first."""
    found = []
    for path in glob.glob(os.path.join(folder, "state_step*.pt")):
        match = re.fullmatch(r"state_step(\d+)\.pt", os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def load_state(path: str) -> Dict:
    state = load_torch_file(path, what="training state")
    missing = {"gen", "disc", "opt_g", "opt_d", "curriculum", "config", "rng"} - set(state)
    if "run" not in state and "step" not in state:     # the run's progress: one entry, or flat (older files)
        missing.add("run")
    if missing:
        raise CheckpointError(f"training state {path} lacks {', '.join(sorted(missing))}: "
                              f"it was not written by this train.py")
    return state


REFUSED_SUFFIX = ".refused"


def newest_state(folder: str, before: Optional[int] = None,
                 warn: Callable[[str], None] = print) -> Optional[Tuple[str, Dict]]:
    """The newest readable state (of a step below ``before`` when given), as (path, state). An
    unreadable or unsafe one (truncated by a full disk or a killed copy, or holding code) is moved
    aside to ``<name>.refused`` with a one-line warning, so it is neither read again nor counted
    among the ``keep_last`` states that pruning keeps."""
    for step, path in reversed(state_files(folder)):
        if before is not None and step >= before:
            continue
        try:
            return path, load_state(path)
        except CheckpointError as exc:
            aside = path + REFUSED_SUFFIX
            os.replace(path, aside)
            warn(f"warning: skipping {path}: {exc}; moved aside to {os.path.basename(aside)}")
    return None


def check_resume(stored: Mapping, current: Mapping, path: str, allow: bool,
                 warn: Callable[[str], None] = print) -> None:
    """Refuse to resume ``path`` when a setting in RESUME_MUST_MATCH differs (one line), unless ``allow``."""
    diffs = [f"{flag} {stored.get(key)!r} -> {current.get(key)!r}" if key != "expert_sha256"
             else f"{flag} is a different file" for key, flag in RESUME_MUST_MATCH
             if stored.get(key) != current.get(key)]
    if not diffs:
        return
    text = f"{path} was written with other settings ({'; '.join(diffs)})"
    if allow and stored.get("generator_preset") != current.get("generator_preset"):
        raise TalkLipError(f"{text}: --resume_anyway cannot change --generator_preset (the saved weights have other "
                           f"shapes); resume with --generator_preset {stored.get('generator_preset')}, or train the new "
                           f"preset in another --checkpoint_dir")
    if not allow:
        raise TalkLipError(f"{text}: rerun with the original settings, use another --checkpoint_dir, "
                           f"or pass --resume_anyway")
    warn(f"warning: {text}; resuming anyway (--resume_anyway)")
