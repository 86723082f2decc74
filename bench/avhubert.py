"""Benchmark the native AV-HuBERT encoder: BASE audio path and LARGE video path.

    python -m bench.avhubert [--seconds 4] [--repeat 3]

Prints one JSON line: frames/s (25 frames per second of input) on CPU, and on CUDA in bf16
when a GPU is present. Weights are random; the cost does not depend on their values.
"""
import argparse
import json
import time

import torch

from models.avhubert import AVHubertModel
from models.presets import encoder_preset
from utils.cli import positive_float, positive_int


def measure(model, inputs: dict, frames: int, repeat: int, device: torch.device, dtype) -> float:
    model = model.to(device).eval()
    inputs = {k: v.to(device) for k, v in inputs.items()}
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type, enabled=False)
    with torch.no_grad(), autocast:
        model.extract_finetune(**inputs)                     # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeat):
            model.extract_finetune(**inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return frames * repeat / (time.perf_counter() - start)


def run(device: torch.device, seconds: float, repeat: int, dtype=None) -> dict:
    frames = int(seconds * 25)
    torch.manual_seed(0)
    base = AVHubertModel(encoder_preset("base", num_label_embs=2004, final_dim=256))
    large = AVHubertModel(encoder_preset("large"))
    return {
        "base_audio_frames_per_s": round(measure(base, {"audio": torch.randn(1, 104, frames)},
                                                 frames, repeat, device, dtype), 1),
        "large_video_frames_per_s": round(measure(large, {"video": torch.randn(1, 1, frames, 88, 88)},
                                                  frames, repeat, device, dtype), 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=positive_float, default=4.0, help="clip length per forward pass")
    parser.add_argument("--repeat", type=positive_int, default=3, help="timed passes")
    args = parser.parse_args()
    result = {"bench": "avhubert_encoder", "clip_s": args.seconds, "torch": torch.__version__,
              "cpu_threads": torch.get_num_threads(), "cpu": run(torch.device("cpu"), args.seconds, args.repeat)}
    if torch.cuda.is_available():
        result["gpu_name"] = torch.cuda.get_device_name(0)
        result["gpu_bf16"] = run(torch.device("cuda"), args.seconds, max(args.repeat, 10), torch.bfloat16)
    else:
        result["gpu_bf16"] = None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
