"""Benchmark a TalkLip training step: samples/s and peak memory at batch 8.

    python -m bench.train_step [--batch_size 8] [--steps 3] [--stage 2]

Prints one JSON line. CPU: a tiny expert (train_expert's 'tiny' preset, random weights) on the
synthetic corpus; CUDA (when present): the same data with an expert of ``--gpu_expert`` size
(default large) in bf16. Samples are clips; each clip gives ~8% of its frames as 5-frame windows.
"""
import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np
import torch

from preparation.make_synthetic import make_corpus
from training.data import collate
from training.expert import build_codec, new_model, save_expert
from training.trainer import TrainConfig, Trainer
from utils.cli import any_int, positive_int
from utils.corpus import read_transcript
from utils.video import extract_audio


def measure(data, expert, device, batch, steps, stage, bf16):
    cfg = TrainConfig(file_dir=data, video_root=f"{data}/main", audio_root=f"{data}/audio", bbx_root=f"{data}/bbx",
                      word_root=f"{data}/main", avhubert_path=expert, checkpoint_dir=f"{data}/ckpt_{device}",
                      batch_size=batch, num_worker=0, tensorboard=False, no_progress=True, device=device, bf16=bf16)
    trainer = Trainer(cfg)
    trainer.curriculum.stage = stage
    items = [trainer.data.train_set[i % len(trainer.data.train_set)] for i in range(batch)]
    batch_data = trainer.to_device(collate(items))
    trainer.train_step([batch_data])                          # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step([batch_data])
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    out = {"samples_per_s": round(batch / seconds, 3), "s_per_step": round(seconds, 2),
           "faces_per_step": int(batch_data["faces_in"].shape[0]), "stage": stage}
    if device == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch_size", type=positive_int, default=8)
    p.add_argument("--steps", type=positive_int, default=2)
    p.add_argument("--stage", type=any_int, default=2, help="2: with the expert and contrastive losses")
    p.add_argument("--gpu_expert", default="large", choices=["tiny", "base", "large"])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as data:
        splits = make_corpus(data, num_clips=max(2 * args.batch_size, 10), seed=0)   # train split >= batch
        for name in splits["all"]:
            os.makedirs(os.path.dirname(f"{data}/bbx/{name}"), exist_ok=True)
            np.save(f"{data}/bbx/{name}.npy", np.load(f"{data}/gt/{name}.npz")["face_box"].astype(np.int64))
            extract_audio(f"{data}/main/{name}.mp4", f"{data}/audio/{name}.wav")
        codec = build_codec([read_transcript(f"{data}/main", n).lower() for n in splits["train"]], 60)
        torch.manual_seed(0)
        save_expert(new_model("tiny", len(codec.dictionary)), codec, f"{data}/tiny.pt")
        result = {"bench": "train_step", "batch_size": args.batch_size, "torch": torch.__version__,
                  "cpu_threads": torch.get_num_threads(),
                  "cpu_tiny_expert": measure(data, f"{data}/tiny.pt", "cpu", args.batch_size, args.steps, args.stage, False)}
        if torch.cuda.is_available():
            save_expert(new_model(args.gpu_expert, len(codec.dictionary)), codec, f"{data}/gpu.pt")
            result["gpu_name"] = torch.cuda.get_device_name(0)
            result[f"gpu_{args.gpu_expert}_expert_bf16"] = measure(data, f"{data}/gpu.pt", "cuda", args.batch_size,
                                                                   max(args.steps, 5), args.stage, True)
        else:
            result["gpu"] = None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
