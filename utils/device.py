"""Choosing the device once, from a script flag."""
import torch

from utils.errors import TalkLipError


def resolve_device(spec) -> torch.device:
    """'cpu', 'cuda', 'cuda:1', or a GPU index as the original scripts take ('0'); a GPU index or
    'cuda' falls back to the CPU when no GPU is present."""
    spec = str(spec).strip().lower()
    if spec == "cpu":
        return torch.device("cpu")
    if spec.isdigit() or spec in ("cuda", "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{spec}" if spec.isdigit() else "cuda")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TalkLipError(f"--device {spec} asks for a GPU but PyTorch sees none: use --device cpu")
        return torch.device(spec)
    raise TalkLipError(f"--device {spec!r} is not understood: use cpu, cuda, cuda:N or a GPU index")
