"""On a GPU: a dub on CUDA in bf16 and fp16 is the CPU fp32 dub to within the precision bound. Skipped
without one (CI has none); the first machine with a GPU checks it, and bench/dub.py reports its speeds."""
import numpy as np
import pytest
import torch

from dubbing import SynthesisOptions, dub
from face_detection import CascadeDetector
from tests.media import head_frames, tone, write_clip
from utils.device import autocast_dtype
from utils.video import VideoReader

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path is not run here")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_gpu_dub_in_half_precision_is_the_cpu_fp32_dub_within_40_db(tmp_path, talklip_checkpoint, precision):
    import copy
    _, model = talklip_checkpoint
    write_clip(tmp_path / "face.mp4", head_frames(12))
    tone(tmp_path / "speech.wav", 0.48)
    cuda = torch.device("cuda")
    dubs = {}
    for name, generator, device, dtype in (("cpu", model, "cpu", None),
                                           ("gpu", copy.deepcopy(model).to(cuda), "cuda",
                                            autocast_dtype(precision, cuda))):
        out = str(tmp_path / f"{name}.mp4")
        dub(generator, str(tmp_path / "face.mp4"), str(tmp_path / "speech.wav"), out, CascadeDetector(),
            SynthesisOptions(progress=False, device=device, dtype=dtype))
        dubs[name] = np.stack(list(VideoReader(out))).astype(np.float64)
    mse = np.mean((dubs["cpu"] - dubs["gpu"]) ** 2)
    assert 10 * np.log10(255 ** 2 / max(mse, 1e-12)) >= 40
