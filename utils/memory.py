"""Weights that need not stay resident: pages of memory-mapped checkpoint tensors handed back.

``load_talklip`` maps a checkpoint file (``torch.load(mmap=True)``) instead of reading it: a tensor's
pages are read from the file when first touched and then count in the process' resident memory
until the mapping goes. ``drop_pages`` hands such pages back to the kernel (``madvise(MADV_DONTNEED)``)
where that is lossless: the pages lie in a private mapping of a file in which no page was ever
written (smaps' ``Anonymous: 0 kB``), so the next touch reads the same bytes from the file (from the
page cache, not the disk, while it stays cached). Values never change; only residency does. Tensors
in ordinary (anonymous) memory are left alone: there, dropping a page would zero it.

``released_after_use(module)`` drops each of a module's tensors right after the leaf module that
owns it has run, so a large module (the 410 MB audio encoder) is never resident as a whole.
"""
import contextlib
import ctypes
import mmap
import os
from typing import Iterable, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn

from utils.pipeline import _glibc

MADV_DONTNEED = 4
PAGE = mmap.PAGESIZE


def _file_mappings() -> List[Tuple[int, int]]:
    """(start, end) of this process' private file mappings without any written (copied) page."""
    if not os.path.exists("/proc/self/smaps"):
        return []
    found, current = [], None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(maxsplit=5)
            if "-" in head[0] and len(head) >= 5 and ":" in head[3]:       # a mapping's header line
                start, end = (int(v, 16) for v in head[0].split("-"))
                path = head[5].strip() if len(head) > 5 else ""
                private_file = head[1].endswith("p") and path.startswith("/") and not path.startswith("/dev/")
                current = (start, end) if private_file else None
            elif current is not None and head[0] == "Anonymous:":
                if int(head[1]) == 0:
                    found.append(current)
                current = None
    return found


def _ranges(tensors: Iterable[torch.Tensor], mappings: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """Page-aligned ranges wholly inside the given tensors' storages and inside one of ``mappings``."""
    out = []
    for tensor in tensors:
        if tensor.device.type != "cpu" or tensor.is_meta:
            continue
        storage = tensor.untyped_storage()
        start, size = storage.data_ptr(), storage.nbytes()
        lo, hi = -(-start // PAGE) * PAGE, (start + size) // PAGE * PAGE
        if hi <= lo:
            continue
        if any(m_start <= lo and hi <= m_end for m_start, m_end in mappings):
            out.append((lo, hi))
    return out


class PageDropper:
    """Drops the file-backed pages of tensors (see the module's docstring). The mappings are read once;
    build a new one after loading other files."""

    def __init__(self):
        self.libc = _glibc()
        self.mappings = _file_mappings() if self.libc is not None else []
        self.dropped = 0            # bytes handed back (resident or not)

    def drop(self, tensors: Iterable[torch.Tensor]) -> int:
        if not self.mappings:
            return 0
        total = 0
        for lo, hi in _ranges(tensors, self.mappings):
            if self.libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), MADV_DONTNEED) == 0:
                total += hi - lo
        self.dropped += total
        return total

    def drop_mappings_of(self, tensors: Iterable[torch.Tensor]) -> int:
        """Drop every page of each mapping that holds one of ``tensors`` (also pages that no live
        tensor uses any more, e.g. a checkpoint's weights read once to fold them)."""
        if not self.mappings:
            return 0
        spans = {span for lo, hi in _ranges(tensors, self.mappings)
                 for span in self.mappings if span[0] <= lo and hi <= span[1]}
        for start, end in spans:
            self.libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_DONTNEED)
        total = sum(end - start for start, end in spans)
        self.dropped += total
        return total


def drop_pages(tensors: Iterable[torch.Tensor], whole_mappings: bool = False) -> int:
    """Hand back the file-backed pages of ``tensors`` (or, ``whole_mappings``, of the files that hold
    them); returns the bytes covered (0 where nothing is file-backed, or not on Linux/glibc)."""
    dropper = PageDropper()
    tensors = list(tensors)
    return dropper.drop_mappings_of(tensors) if whole_mappings else dropper.drop(tensors)


def _own_tensors(module: nn.Module) -> List[torch.Tensor]:
    return list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))


@contextlib.contextmanager
def released_after_use(module: Optional[nn.Module]) -> Iterator[PageDropper]:
    """While inside, every leaf module of ``module`` drops its own file-backed tensors' pages right
    after its forward pass, and all of them are dropped on leaving; the hooks are removed on leaving
    (the module is as it was)."""
    dropper = PageDropper()
    hooks = []

    def hook_for(own):
        def after_forward(*_):
            dropper.drop(own)          # returns None: the module's output is kept
        return after_forward

    if module is not None and dropper.mappings:
        for sub in module.modules():
            own = _own_tensors(sub)
            if own:
                hooks.append(sub.register_forward_hook(hook_for(own)))
    try:
        yield dropper
    finally:
        for hook in hooks:
            hook.remove()
        if module is not None:
            dropper.drop(list(module.parameters()) + list(module.buffers()))
