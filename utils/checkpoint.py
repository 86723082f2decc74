"""The one place that reads weights files: safe unpickling, prefix stripping, strict loading.

``torch.load`` runs with ``weights_only=True`` so a weights file cannot execute code; files
that hold other pickled objects (fairseq checkpoints) have their own restricted unpickler.
"""
import os
import pickle
from typing import Dict, Mapping, Union, Tuple

import torch
import torch.nn as nn

from utils.errors import CheckpointError

STRIPPED_PREFIXES = ("module.", "_orig_mod.")   # DataParallel/DDP and torch.compile wrappers
SHOWN_KEYS = 4


def load_state_dict_file(path: str, what: str = "checkpoint", mmap: bool = False) -> dict:
    """Load a torch file of tensors on CPU; a dict holding ``state_dict`` returns that entry.
    With ``mmap`` the tensors stay in the file's pages instead of being read into memory."""
    return load_checkpoint_file(path, what, mmap)[0]


def load_torch_file(path: str, what: str = "checkpoint", mmap: bool = False):
    """Whatever a torch file holds, read without running code (``weights_only=True``): tensors and
    plain containers/numbers/strings. Anything else is refused with one line."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} file {path} does not exist: check the path")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if not mmap or "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)   # legacy (non-zip) file
    except pickle.UnpicklingError:
        raise CheckpointError(f"{what} file {path} holds pickled objects other than tensors and plain "
                              f"data, which are refused because loading them could run code: give a "
                              f"weights file (state dict)") from None
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {what} file {path} ({reason[:200]}): "
                              f"is it a PyTorch weights file, complete and uncorrupted?") from None


def load_checkpoint_file(path: str, what: str = "checkpoint", mmap: bool = False) -> Tuple[dict, dict]:
    """(state dict, the other top-level entries of the file, e.g. optimizer and global_step)."""
    obj = load_torch_file(path, what, mmap)
    meta = {}
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what} file {path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj), meta


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove wrapper prefixes (``module.``, ``_orig_mod.``) from the start of keys only."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in STRIPPED_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _listing(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else "")


def state_dict_diff(module: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """A readable one-line difference between a module's keys/shapes and ``state``; '' if none."""
    expected = module.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                   for k in sorted(set(expected) & set(state))
                   if tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys ({_listing(missing)})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys ({_listing(unexpected)})")
    if wrong_shape:
        parts.append(f"{len(wrong_shape)} shape mismatches ({'; '.join(wrong_shape[:SHOWN_KEYS])})")
    return "; ".join(parts)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                assign: bool = False) -> None:
    """Load ``state`` into ``module`` requiring identical keys and shapes (fp16 tensors are cast).
    With ``assign`` (for a module built on the meta device) the tensors are taken over, not copied."""
    state = strip_prefixes(state)
    diff = state_dict_diff(module, state)
    if diff:
        raise CheckpointError(f"{source} does not match {type(module).__name__}: {diff}; "
                              f"is this the right weights file?")
    if assign:
        expected = module.state_dict()
        state = {k: v.to(expected[k].dtype) if v.dtype != expected[k].dtype else v for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=assign)


def save_atomic(obj, path: Union[str, os.PathLike]) -> None:
    """``torch.save`` through a temporary file renamed into place."""
    from utils.fileio import atomic_output
    with atomic_output(os.fspath(path)) as tmp:
        torch.save(obj, tmp)
