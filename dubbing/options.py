"""What a dub or a test-set synthesis is asked to do (``SynthesisOptions``), and how its progress shows."""
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from tqdm import tqdm


@dataclass(frozen=True)
class MouthRegion:
    """The part of the face box a dub takes from the generator (``paste="mouth"``), as fractions of the box:
    from ``top`` of its height down to the bottom, and ``side`` of its width in from either edge; inside
    it the generated face fades in over ``feather`` of the box height (from its top, sides and bottom
    edge), outside it the frame keeps its own pixels. The generator only redraws the lower half of its
    input; above, its 96-px picture is an upscaled copy of the frame, blurrier than the frame itself."""
    top: float = 0.5
    side: float = 0.16
    feather: float = 0.12

    def __post_init__(self):
        for name in ("top", "side", "feather"):
            value = getattr(self, name)
            if not 0.0 <= value < (0.5 if name == "side" else 1.0):
                raise ValueError(f"MouthRegion.{name} must be in [0, {0.5 if name == 'side' else 1}), got {value}")


PASTE_MODES = ("mouth", "face")


BF16_BATCH = 8     # 2 CPU cores, folded generator: 8 ran 1.3x 4's frames/s in bf16 (and on a GPU)
FP32_BATCH = 4     # fp32 is within a few % of 8's speed at 4 (the generator alone 41.7 / 42.0 / 32.6 frames/s at 4
                   # against 40.7 / 45.2 / 33.7 at 8 in three runs; a 60 s 720p dub 23.2 / 23.2 against 24.1 / 23.5) and
                   # the dub peaks 80-110 MB lower (938 / 958 against 1047 / 1037 MB: the batch's activations on top of
                   # its first chunk), under the 1 GB bound; the faces are the same bit for bit at any batch


@dataclass
class SynthesisOptions:
    batch_size: Optional[int] = None   # faces per generator batch; None: FP32_BATCH in fp32 on the CPU, else BF16_BATCH
    chunk_frames: int = 32        # frames cropped / generated / pasted / handed to the encoder at a time
    feather: int = 0              # blend width in pixels (0: paste the face box as the original)
    audio_window: int = 1500      # audio frames (25 Hz) the transformer sees at once
    device: str = "cpu"
    dtype: Optional[torch.dtype] = None   # e.g. torch.bfloat16 on GPU
    progress: bool = True         # tqdm bars on stderr
    read_ahead: int = 8           # decoded frames waiting for the model
    on_progress: Optional[Callable[[str, int, int], None]] = None   # (stage, frames done, frames in all)
    release_memory: bool = True   # hand freed heap pages and the audio encoder's mapped pages back as it goes
    paste: str = "mouth"          # "mouth": only the mouth region (``region``); "face": the whole box (the paper's)
    region: MouthRegion = MouthRegion()
    reference: str = "own"        # the generator's reference face: own, first, closed or a frame number (dubbing.reference)
    crf: int = 18                 # the dub's H.264 quality (x264's crf: lower is better and larger; 18 ~ visually lossless)

    def __post_init__(self):
        if self.batch_size is None:
            fp32_cpu = self.dtype not in (torch.bfloat16, torch.float16) and str(self.device).startswith("cpu")
            self.batch_size = FP32_BATCH if fp32_cpu else BF16_BATCH
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be 0..51, got {self.crf}")
        if self.paste not in PASTE_MODES:
            raise ValueError(f"paste must be one of {PASTE_MODES}, got {self.paste!r}")


class StageProgress:
    """One stage's progress: a tqdm bar (``show``) and ``on_progress(stage, done, total)``, advanced together."""

    def __init__(self, stage: str, total: int, show: bool, on_progress=None):
        self.stage, self.total, self.done, self.on_progress = stage, total, 0, on_progress
        self.bar = tqdm(total=total, desc=stage, unit="frame", disable=not show)
        self.update(0)

    def update(self, frames: int) -> None:
        self.done += frames
        self.bar.update(frames)
        if self.on_progress is not None:
            self.on_progress(self.stage, self.done, self.total)

    def close(self) -> None:
        self.bar.close()
