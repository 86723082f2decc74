"""Pictures, targets and the summary of a run on real GRID video (what ``quickstart.sh --grid_root`` shows).

    python -m evaluation.grid_report --run_dir R --data_root data/grid --clip s1/ID --expert E --observer O --syncnet S

Reads what bench/grid_experiment.sh wrote into ``--run_dir`` (lists/, synt_<tag>/ and the metric JSON files of
each tag: ``ground_truth`` for the real test videos, ``before`` and ``after`` training, ``ablation``; dub/) and
the prepared GRID folder (``--data_root``), and writes:

- ``samples.png``: generated mouths beside the real ones, one row per word class of GRID's grammar (command,
  colour, preposition, letter, digit, adverb): each tile the lower half of the face crop at the middle of one
  word of a test sentence, real above, generated below;
- ``mouth_sync.png``: one test clip's mouth reading from the real video against the generated ones (before and
  after training), both high-passed as the measure reads them;
- ``summary.json``: paths, per tag PSNR/SSIM (face crops), mouth sync against the real mouth (mean per clip),
  LSE-C/LSE-D and the observer's WER; the dub (the observer's WER against the driving sentence, its mouth sync
  against that sentence's real video); the targets of the real main job, each with its value and whether it is
  met; training, the expert, timings.

GRID: Cooke, Barker, Cunningham and Shao, JASA 120(5), 2006, CC BY 4.0.
"""
import argparse
import json
import os
from typing import Dict, List, Sequence

import cv2
import numpy as np

from evaluation.mouth_sync import load_ground_truth, real_clip_mouth_sync
from evaluation.report import BLACK, FONT, _frames, _load_json, _optional_json, gan_health, observer_figure, \
    parse_seconds, plot_panels, print_paths, write_png
from face_detection.boxes import crop_face
from preparation.grid import FPS, GRAMMAR
from utils.corpus import load_boxes
from utils.errors import run_cli
from utils.fileio import atomic_output

CLASS_NAMES = ("command", "colour", "preposition", "letter", "digit", "adverb")
PER_ROW = 6               # words shown per class


def word_class_grid(data_root: str, synthesized_root: str, names: Sequence[str], scale: int = 2) -> np.ndarray:
    """One row per word class: up to ``PER_ROW`` distinct words of that class from the clips ``names``, each the
    lower half of the face crop at the word's middle frame, the real clip's above the generated one's."""
    picked: Dict[int, List[tuple]] = {c: [] for c in range(len(GRAMMAR))}
    for name in names:
        with np.load(f"{data_root}/gt/{name}.npz") as data:
            words, starts, ends = data["words"], data["word_start_s"], data["word_end_s"]
        for word, start, end in zip(words, starts, ends):
            cls = next(c for c, slot in enumerate(GRAMMAR) if str(word) in slot)
            if len(picked[cls]) < PER_ROW and all(w != str(word) for w, _, _ in picked[cls]):
                picked[cls].append((str(word), name, int((start + end) / 2 * FPS)))
    wanted: Dict[str, set] = {}
    for entries in picked.values():
        for _, name, frame in entries:
            wanted.setdefault(name, set()).add(frame)
    crops = {}                   # (clip, frame) -> (real, generated) face crops: each video decoded once
    for name, frames in wanted.items():
        boxes = load_boxes(f"{data_root}/bbx", name)
        real = _frames(f"{data_root}/main/{name}.mp4", [min(f, len(boxes) - 1) for f in frames])
        made = _frames(f"{synthesized_root}/{name}.mp4", [min(f, len(boxes) - 1) for f in frames])
        for f in frames:
            k = min(f, len(boxes) - 1)
            crops[name, f] = crop_face(real[k], boxes[k]), crop_face(made[k], boxes[k])
    rows = []
    for cls, entries in picked.items():
        tiles = []
        for word, name, frame in entries:
            real, made = crops[name, frame]
            label = np.full((16, 96, 3), 255, np.uint8)
            cv2.putText(label, word.lower(), (3, 12), FONT, 0.38, BLACK, 1, cv2.LINE_AA)
            tiles.append(np.concatenate([label, real[48:], made[48:], np.full((4, 96, 3), 255, np.uint8)], axis=0))
        tiles += [np.full_like(tiles[0], 255)] * (PER_ROW - len(tiles)) if tiles else []
        side = np.full((tiles[0].shape[0], 84, 3), 255, np.uint8)
        cv2.putText(side, CLASS_NAMES[cls], (3, 30), FONT, 0.4, BLACK, 1, cv2.LINE_AA)
        cv2.putText(side, "real", (3, 16 + 30), FONT, 0.35, BLACK, 1, cv2.LINE_AA)
        cv2.putText(side, "generated", (3, 16 + 48 + 30), FONT, 0.35, BLACK, 1, cv2.LINE_AA)
        rows.append(np.concatenate([side] + tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    return cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def sync_figure(data_root: str, name: str, synthesized: Dict[str, str]) -> np.ndarray:
    """The real clip's mouth reading (green) against each generated video's (red), high-passed, in units of the
    real reading's standard deviation."""
    gt = load_ground_truth(f"{data_root}/gt/{name}.npz", real=True)
    panels = []
    for label, path in synthesized.items():
        result = real_clip_mouth_sync(path, f"{data_root}/main/{name}.mp4", gt)
        real, made = np.array(result["opening"]), np.array(result["darkness"])
        unit = max(float(np.std(real)), 1e-6)
        panels.append((f"{name}, {label}: r = {result['r']:.2f} (green: the real mouth)", real / unit / 3,
                       made / unit / 3))
    return plot_panels(panels, FPS)


def targets(m: Dict[str, Dict], dub: Dict) -> Dict[str, Dict]:
    """The real main job's targets (issue 50), each {value, bound, met}."""
    gt, after, before = m["ground_truth"], m["after"], m["before"]
    rows = {
        "psnr >= 29 dB": (after["psnr"], 29.0, after["psnr"] >= 29.0),
        "ssim >= 0.90": (after["ssim"], 0.90, after["ssim"] >= 0.90),
        "mouth sync r >= 0.75": (after["mouth_sync"], 0.75, after["mouth_sync"] >= 0.75),
        "LSE-C within 1.5 of the real videos'": (after["lse_c"], gt["lse_c"], abs(after["lse_c"] - gt["lse_c"]) <= 1.5),
        "LSE-D within 1.5 of the real videos'": (after["lse_d"], gt["lse_d"], abs(after["lse_d"] - gt["lse_d"]) <= 1.5),
        "observer WER <= the real videos' + 0.20": (after["observer_wer"], gt["observer_wer"] + 0.2,
                                                    after["observer_wer"] <= gt["observer_wer"] + 0.2),
        "observer WER >= 0.5 below the untrained generator's": (
            after["observer_wer"], before["observer_wer"] - 0.5, after["observer_wer"] <= before["observer_wer"] - 0.5),
        "dub: observer WER of the driving words <= 0.35": (dub["observer_wer"], 0.35, dub["observer_wer"] <= 0.35),
        "dub: mouth sync r >= 0.6": (dub["mouth_sync"], 0.6, dub["mouth_sync"] >= 0.6),
    }
    return {k: {"value": round(float(v), 4), "bound": round(float(b), 4), "met": bool(ok)} for k, (v, b, ok) in rows.items()}


def grid_summary(run_dir: str, data_root: str, clip: str, seconds: Dict[str, int], expert_path: str,
                 observer_path: str, syncnet_path: str) -> Dict:
    """Write samples.png, mouth_sync.png, observer_wer.png and summary.json of a GRID run; return the summary."""
    lists = f"{run_dir}/lists"
    with open(f"{lists}/test.txt") as handle:
        test = [line.split()[0] for line in handle if line.strip()]
    write_png(f"{run_dir}/samples.png", word_class_grid(data_root, f"{run_dir}/synt_after", test))
    write_png(f"{run_dir}/mouth_sync.png", sync_figure(data_root, clip, {
        "before training": f"{run_dir}/synt_before/{clip}.mp4", "after training": f"{run_dir}/synt_after/{clip}.mp4"}))
    tags = ("before", "after") + (("ablation",) if os.path.isdir(f"{run_dir}/synt_ablation") else ())
    metrics = {}
    for tag in ("ground_truth",) + tags:
        lse, observer = _load_json(f"{run_dir}/lse_{tag}.json"), _load_json(f"{run_dir}/observer_{tag}.json")
        row = {"lse_c": lse["lse_c"], "lse_d": lse["lse_d"], "observer_wer": observer["wer"], "clips": observer["clips"]}
        if tag != "ground_truth":
            quality, sync = _load_json(f"{run_dir}/quality_{tag}.json"), _load_json(f"{run_dir}/mouth_sync_{tag}.json")
            row.update(psnr=quality["psnr"], ssim=quality["ssim"], mouth_sync=sync["r_mean"])
        metrics[tag] = row
    observers = {t: _load_json(f"{run_dir}/observer_{t}.json") for t in metrics}
    write_png(f"{run_dir}/observer_wer.png", observer_figure(
        {f"{t.replace('_', ' ')} (WER {v['wer']:.2f})": [row["wer"] for row in v["per_clip"]]
         for t, v in observers.items()}))
    sync_dub, observer_dub = _load_json(f"{run_dir}/dub/mouth_sync_dubbed.json"), _load_json(f"{run_dir}/observer_dubbed.json")
    dub = {"mouth_sync": sync_dub["r"], "observer_wer": observer_dub["wer"], "frames": sync_dub["frames"],
           "face_clip": sync_dub["face_clip"], "speech_clip": sync_dub["speech_clip"],
           "read": observer_dub["per_clip"][0].get("hyp"), "driving_words": observer_dub["per_clip"][0].get("ref")}
    run = _load_json(f"{run_dir}/train/train_summary.json")
    expert = _optional_json(f"{run_dir}/expert.json") or {}
    summary = {
        "data": "GRID speaker s1 (Cooke et al. 2006, CC BY 4.0)",
        "paths": {"data": data_root, "expert": expert_path, "observer": observer_path, "syncnet": syncnet_path,
                  "checkpoints": f"{run_dir}/train", "generator": run["checkpoint"], "tensorboard": f"{run_dir}/train/tb",
                  "synthesized_before": f"{run_dir}/synt_before", "synthesized_after": f"{run_dir}/synt_after",
                  "dubbed": f"{run_dir}/dubbed.mp4", "dub_strip": f"{run_dir}/dub/dub_strip.mp4",
                  "mouth_sync_plot": f"{run_dir}/mouth_sync.png", "sample_grid": f"{run_dir}/samples.png",
                  "observer_plot": f"{run_dir}/observer_wer.png"},
        "metrics": metrics,
        "dubbed": dub,
        "targets": targets(metrics, dub),
        "training": {"steps": run["step"], "stage_reached": run["stage"], "stage_name": run["stage_name"],
                     "precision": run.get("precision", "fp32"), "rollbacks": run["rollbacks"],
                     "gan": gan_health(run.get("train_log", []), run["history"]),
                     "validation": [{k: h[k] for k in ("step", "stage", "l1", "token_acc", "disc_acc") if k in h}
                                    for h in run["history"]]},
        "expert": {k: expert[k] for k in ("test_wer", "test_wer_blank", "test_token_acc", "test_token_acc_blank",
                                          "trained") if k in expert},
        "seconds": seconds,
    }
    with atomic_output(f"{run_dir}/summary.json") as tmp, open(tmp, "w") as handle:
        json.dump(summary, handle, indent=1)
    return summary


def print_summary(summary: Dict, run_dir: str) -> None:
    m, t = summary["metrics"], summary["training"]
    print(f"\nthe real main job (GRID s1, CC BY 4.0) finished in {summary['seconds'].get('total', 0)}s; "
          f"{m['after']['clips']} held-out test sentences")
    print(f"  {'':17s}{'PSNR':>7s} {'SSIM':>6s} {'sync r':>7s} {'LSE-C':>6s} {'LSE-D':>6s} {'observer WER':>13s}")
    for tag, row in m.items():
        label = {"ground_truth": "real videos", "ablation": "no lip loss"}.get(tag, tag + " training")
        quality = (f"{row['psnr']:7.2f} {row['ssim']:6.3f} {row['mouth_sync']:7.3f}" if "psnr" in row
                   else f"{'':7s} {'':6s} {'':7s}")
        print(f"  {label + ':':17s}{quality} {row['lse_c']:6.2f} {row['lse_d']:6.2f} {row['observer_wer']:13.3f}")
    d = summary["dubbed"]
    print(f"  {'dubbed:':17s}{d['face_clip']} with {d['speech_clip']}'s speech: observer WER {d['observer_wer']:.3f} "
          f"against the driving words, mouth sync r {d['mouth_sync']:.3f} against their real video")
    print(f"  {'training:':17s}stage {t['stage_reached']} ({t['stage_name']}) in {t['steps']} {t['precision']} steps, "
          f"{t['rollbacks']} rollbacks")
    print("  targets:")
    for name, row in summary["targets"].items():
        print(f"    {'met ' if row['met'] else 'MISS'} {name}: {row['value']:.3f} (bound {row['bound']:.3f})")
    print_paths(summary, run_dir)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True, help="the GRID job's --out_dir")
    parser.add_argument("--data_root", required=True, help="the prepared GRID folder (preparation.grid's --out_dir)")
    parser.add_argument("--clip", required=True, help="test clip shown in mouth_sync.png (<spk>/<clip>)")
    parser.add_argument("--expert", required=True, help="the expert's checkpoint")
    parser.add_argument("--observer", required=True, help="the observer's checkpoint")
    parser.add_argument("--syncnet", required=True, help="the SyncNet behind LSE-C/D")
    parser.add_argument("--seconds", default="", help="timings to record, as name=seconds,name=seconds")
    return parser.parse_args(argv)


def main(args) -> int:
    summary = grid_summary(args.run_dir, args.data_root, args.clip, parse_seconds(args.seconds), args.expert, args.observer, args.syncnet)
    print_summary(summary, args.run_dir)
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
