"""Benchmark the evaluation metrics: clips/s for each, on the synthetic corpus.

    python -m bench.eval [--num_clips 4] [--beam 5]

Prints one JSON line. Full-size models with random weights (SyncNet, the conformer observer 2,
AV-HuBERT LARGE observer 1; cost does not depend on weight values); the synthesized folder is the
corpus itself. Observer 1 is timed on decoding ids (beam ``--beam``; the paper uses 50), the
others on the whole per-clip path including video decoding. CPU always, CUDA too when present.
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch

from evaluation import sync_eval, teacher_force_wer, visual_quality
from models.avhubert.reading import mouth_rois
from models.avhubert import AVHubertSeq2Seq
from models.presets import decoder_preset, encoder_preset
from models.conformer_lip_reading import ConformerLipReader
from preparation.make_synthetic import make_corpus
from utils.cli import positive_int
from utils.corpus import load_boxes


def timed(fn, names):
    fn(names[0])                                            # warm-up
    start = time.perf_counter()
    for name in names:
        fn(name)
    return round(len(names) / (time.perf_counter() - start), 3)


def run(device: str, data: str, names, beam: int) -> dict:
    torch.manual_seed(0)
    dev = torch.device(device)
    main, bbx = f"{data}/main", f"{data}/bbx"
    vq = visual_quality.metric(visual_quality.VisualQualityOptions(synt_root=main, orig_root=main, bbx_root=bbx))
    sync = sync_eval.metric(sync_eval.SyncOptions(data_root=main, initial_model=""), sync_eval.SyncNet().to(dev).eval())
    conformer = ConformerLipReader().to(dev).eval()
    wer2 = teacher_force_wer.metric(teacher_force_wer.ConformerWerOptions(video_root=main, ckpt_path="", word_root=main,
                                                                          device=device), conformer)
    observer1 = AVHubertSeq2Seq(encoder_preset("large"), decoder_preset("large", vocab_size=1000)).to(dev).eval()

    def wer1(name):
        rois = mouth_rois(f"{main}/{name}.mp4", load_boxes(bbx, name))
        with torch.no_grad():
            observer1.generate(video=rois[None, None].to(dev), padding_mask=torch.zeros(1, len(rois), dtype=torch.bool,
                               device=dev), beam=beam, max_len_a=1.0, max_len_b=0)
    return {"psnr_ssim_clips_per_s": timed(vq, names), "lse_clips_per_s": timed(sync, names),
            "wer2_conformer_clips_per_s": timed(wer2, names), f"wer1_avhubert_large_beam{beam}_clips_per_s":
            timed(wer1, names[:2])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_clips", type=positive_int, default=4)
    parser.add_argument("--beam", type=positive_int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        splits = make_corpus(data, num_clips=max(3, args.num_clips), seed=0)
        names = splits["all"][:args.num_clips]
        for name in names:                      # ground-truth face boxes stand in for bbx_extract
            gt = np.load(f"{data}/gt/{name}.npz")
            os.makedirs(os.path.dirname(f"{data}/bbx/{name}"), exist_ok=True)
            np.save(f"{data}/bbx/{name}.npy", gt["face_box"].astype(np.int64))
        seconds = [float(np.load(f"{data}/gt/{n}.npz")["mouth_opening"].shape[0]) / 25 for n in names]
        result = {"bench": "eval", "clips": len(names), "mean_clip_s": round(float(np.mean(seconds)), 2),
                  "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
                  "cpu": run("cpu", data, names, args.beam)}
        if torch.cuda.is_available():
            result["gpu_name"] = torch.cuda.get_device_name(0)
            result["gpu"] = run("cuda", data, names, args.beam)
        else:
            result["gpu"] = None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
