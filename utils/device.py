"""Choosing the device once, from a script flag; every script and the trainer use this."""
import os
from typing import Optional

import torch

from utils.errors import TalkLipError

DEVICE_HELP = ("auto (the GPU when PyTorch sees one, else the CPU), cpu, cuda, cuda:N, or a GPU index N "
               "as the original scripts take")


def resolve_device(spec="auto", gpu_hint: Optional[int] = None) -> torch.device:
    """'auto', 'cpu', 'cuda', 'cuda:N' or 'N' -> a torch.device.

    'auto' and 'cuda' take GPU ``gpu_hint`` modulo the GPU count when given (torchrun's LOCAL_RANK
    when set), else GPU 0. Asking for a GPU (anything but 'auto' and 'cpu') where PyTorch sees none,
    or for a GPU index that does not exist, is an error naming the fix."""
    text = str(spec).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text not in ("auto", "cuda") and not text.isdigit() and not text.startswith("cuda:"):
        raise TalkLipError(f"--device {spec!r} is not understood: use {DEVICE_HELP}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        if text == "auto":
            return torch.device("cpu")
        raise TalkLipError(f"--device {spec} asks for a GPU but PyTorch sees none: use --device cpu "
                           f"(or auto), or install a CUDA build of PyTorch")
    if text in ("auto", "cuda"):
        if gpu_hint is None and "LOCAL_RANK" in os.environ:
            gpu_hint = int(os.environ["LOCAL_RANK"])
        index = (gpu_hint or 0) % count
    else:
        index_text = text.split(":", 1)[1] if text.startswith("cuda:") else text
        if not index_text.isdigit():
            raise TalkLipError(f"--device {spec!r} is not understood: use {DEVICE_HELP}")
        index = int(index_text)
        if index >= count:
            raise TalkLipError(f"--device {spec} asks for GPU {index} but PyTorch sees {count}: "
                               f"use an index below {count}")
    return torch.device(f"cuda:{index}")


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(name: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of an inference ``--precision``: 'auto' -> bf16 where ``device`` computes bf16 in
    hardware (``has_native_bf16``: a CPU with AVX512-BF16 or AMX, a GPU that has it), else None (fp32);
    'fp32' -> None; 'bf16' -> bf16 (emulated, slow, on a CPU without it, but allowed); 'fp16' -> fp16, on a
    GPU only."""
    if name == "auto":
        return torch.bfloat16 if has_native_bf16(device) else None
    dtype = AUTOCAST_DTYPES[name]
    if dtype is torch.float16 and device.type != "cuda":
        raise TalkLipError(f"--precision fp16 needs a GPU (--device cuda); on {device} use auto, bf16 or fp32")
    return dtype


def has_native_bf16(device: torch.device) -> bool:
    """Whether bf16 arithmetic runs in hardware on ``device``: a GPU that supports it, or a CPU with
    AVX512-BF16 or AMX. Elsewhere PyTorch emulates bf16 on the CPU, slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)
