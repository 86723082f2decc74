"""Pictures and the summary of a run on the synthetic corpus (what quickstart.sh shows a person).

    python -m evaluation.report --run_dir runs/quickstart --clip SPK/CLIP [--seconds data=12,expert=80,...]

Reads what quickstart.sh wrote into ``--run_dir`` (corpus/, synt_before/, synt_after/, the metric
JSON files, train/train_summary.json, expert.json) and writes:
- ``mouth_sync.png``: for one test clip, the ground-truth mouth opening over time against the
  opening read from the synthesized pixels, before and after training;
- ``samples.png``: face crops of that clip, reference | masked | generated | ground truth, at
  frames from closed to wide open;
- ``summary.json``: paths, metrics before/after (PSNR, SSIM, mouth sync), the dubbed clip's mouth
  sync, training (stages, validations, GAN health), the expert's token accuracy, timings.
Plots are drawn with OpenCV: no plotting library needed.
"""
import argparse
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from utils.corpus import load_boxes
from evaluation.mouth_sync import darkness_series, load_ground_truth, pearson
from face_detection.boxes import crop_face
from utils.errors import TalkLipError, run_cli
from utils.fileio import atomic_output
from utils.video import VideoReader

GREEN, RED, GREY, BLACK, WHITE = (60, 160, 60), (40, 40, 210), (200, 200, 200), (0, 0, 0), (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
COLLAPSED_LOSS = 20.0     # a discriminator BCE this high means it is sure of the wrong answer
VANISHED_LOSS = 1e-3      # ... this low, that the generator gets no useful gradient from it


def write_png(path: str, image: np.ndarray) -> None:
    with atomic_output(path) as tmp:             # the temporary keeps the .png extension
        if not cv2.imwrite(tmp, image):
            raise TalkLipError(f"cannot write {path}: check the folder is writable")


def opening_from_pixels(video_path: str, gt: Dict[str, np.ndarray], calibration: np.ndarray) -> np.ndarray:
    """The mouth opening a video shows, in ground-truth units: its mouth darkness mapped through the
    straight line that maps the corpus clip's own darkness (``calibration``) onto its true opening."""
    slope, offset = np.polyfit(calibration, gt["mouth_opening"], 1)
    return slope * darkness_series(video_path, gt, np.arange(len(gt["mouth_opening"]))) + offset


def plot_panels(panels: Sequence[Tuple[str, np.ndarray, np.ndarray]], fps: float, width: int = 960,
                panel_height: int = 220) -> np.ndarray:
    """Stacked line charts (title, truth, reading): truth green, reading red; x in seconds, y the opening."""
    margin_l, margin_r, margin_t, margin_b = 60, 20, 34, 30
    canvas = np.full((panel_height * len(panels), width, 3), 255, np.uint8)
    for p, (title, truth, reading) in enumerate(panels):
        top = p * panel_height
        x0, x1, y0, y1 = margin_l, width - margin_r, top + margin_t, top + panel_height - margin_b
        lo, hi = min(0.0, float(np.min(reading))), max(1.0, float(np.max(reading)))
        to_px = lambda i, v: (int(x0 + (x1 - x0) * i / max(1, len(truth) - 1)), int(y1 - (y1 - y0) * (v - lo) / (hi - lo)))
        cv2.rectangle(canvas, (x0, y0), (x1, y1), GREY, 1)
        for value in (0.0, 1.0):
            y = to_px(0, value)[1]
            cv2.line(canvas, (x0, y), (x1, y), GREY, 1)
            cv2.putText(canvas, f"{value:.0f}", (x0 - 22, y + 5), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
        for second in range(int(len(truth) / fps) + 1):
            x = to_px(second * fps, lo)[0]
            cv2.putText(canvas, f"{second}s", (x - 8, y1 + 18), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
        for series, color in ((truth, GREEN), (reading, RED)):
            points = np.array([to_px(i, v) for i, v in enumerate(series)], np.int32)
            cv2.polylines(canvas, [points], False, color, 2, cv2.LINE_AA)
        cv2.putText(canvas, title, (x0, top + 22), FONT, 0.55, BLACK, 1, cv2.LINE_AA)
        cv2.putText(canvas, "truth", (x1 - 190, top + 22), FONT, 0.5, GREEN, 1, cv2.LINE_AA)
        cv2.putText(canvas, "read from the pixels", (x1 - 135, top + 22), FONT, 0.45, RED, 1, cv2.LINE_AA)
    return canvas


def mouth_sync_figure(corpus: str, name: str, synthesized: Dict[str, str], fps: float = 25.0) -> np.ndarray:
    """The ground-truth opening of clip ``name`` against the opening read from each synthesized video
    (label -> path), one panel each."""
    gt = load_ground_truth(f"{corpus}/gt/{name}.npz")
    truth = gt["mouth_opening"]
    calibration = darkness_series(f"{corpus}/main/{name}.mp4", gt, np.arange(len(truth)))
    panels = []
    for label, path in synthesized.items():
        reading = opening_from_pixels(path, gt, calibration)
        panels.append((f"{name}, {label}: r = {pearson(reading, truth):.2f}", truth, reading))
    return plot_panels(panels, fps)


def _frames(path: str, indices: Sequence[int]) -> Dict[int, np.ndarray]:
    wanted, found = set(int(i) for i in indices), {}
    with VideoReader(path) as reader:
        for i, frame in enumerate(reader):
            if i in wanted:
                found[i] = frame
    return found


def sample_grid(corpus: str, synthesized: str, name: str, bbx_root: str, rows: int = 6, scale: int = 2) -> np.ndarray:
    """Face crops at ``rows`` frames from closed to wide open: reference | masked | generated | ground
    truth (the test protocol's reference is frame 0)."""
    opening = load_ground_truth(f"{corpus}/gt/{name}.npz")["mouth_opening"]
    boxes = load_boxes(bbx_root, name)
    order = np.argsort(opening, kind="stable")
    picked = list(dict.fromkeys(int(order[round(q * (len(order) - 1))]) for q in np.linspace(0, 1, rows)))
    original, generated = _frames(f"{corpus}/main/{name}.mp4", picked + [0]), _frames(synthesized, picked)
    reference = crop_face(original[0], boxes[0])
    tiles = []
    for i in picked:
        truth = crop_face(original[i], boxes[i])
        masked = truth.copy()
        masked[truth.shape[0] // 2:] = 0
        tiles.append(np.concatenate([reference, masked, crop_face(generated[i], boxes[i]), truth], axis=1))
    grid = cv2.resize(np.concatenate(tiles, axis=0), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    header = np.full((30, grid.shape[1], 3), 255, np.uint8)
    for k, label in enumerate(("reference", "masked", "generated", "ground truth")):
        cv2.putText(header, label, (k * 96 * scale + 8, 21), FONT, 0.55, BLACK, 1, cv2.LINE_AA)
    return np.concatenate([header, grid], axis=0)


def viseme_grid(corpus: str, synthesized_root: str, names: Sequence[str], bbx_root: str, scale: int = 2) -> np.ndarray:
    """One frame per viseme class (the readable corpus' gt ``viseme``), ground truth above generated: the
    lower half of the face crop (the generated part), at the middle of the longest run of that class
    among the clips ``names`` (test clips synthesized into ``synthesized_root``)."""
    from preparation.visemes import VISEMES
    best: Dict[int, Tuple[int, str, int]] = {}         # class -> (run length, clip, frame)
    for name in names:
        with np.load(f"{corpus}/gt/{name}.npz") as data:
            ids = data["viseme"]
        start = 0
        for k in range(1, len(ids) + 1):
            if k == len(ids) or ids[k] != ids[start]:
                if ids[start] != 0 and k - start > best.get(int(ids[start]), (0,))[0]:
                    best[int(ids[start])] = (k - start, name, (start + k - 1) // 2)
                start = k
    columns = []
    for cls in sorted(best):
        _, name, frame = best[cls]
        boxes = load_boxes(bbx_root, name)
        truth = crop_face(_frames(f"{corpus}/main/{name}.mp4", [frame])[frame], boxes[frame])
        made = crop_face(_frames(f"{synthesized_root}/{name}.mp4", [frame])[frame], boxes[frame])
        column = np.concatenate([truth[48:], made[48:]], axis=0)
        label = np.full((18, column.shape[1], 3), 255, np.uint8)
        cv2.putText(label, VISEMES[cls][0][:12], (2, 13), FONT, 0.33, BLACK, 1, cv2.LINE_AA)
        columns.append(np.concatenate([label, column], axis=0))
    grid = cv2.resize(np.concatenate(columns, axis=1), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    side = np.full((grid.shape[0], 110, 3), 255, np.uint8)
    cv2.putText(side, "ground truth", (4, 18 * scale + 48 * scale // 2), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
    cv2.putText(side, "generated", (4, 18 * scale + 48 * scale + 48 * scale // 2), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
    return np.concatenate([side, grid], axis=1)


def observer_figure(per_clip: Dict[str, Sequence[float]], width: int = 960, height: int = 320) -> np.ndarray:
    """The observer's WER per test clip (x) for each run (label -> per-clip WERs, same clip order), as dots
    joined by lines, with each run's corpus WER in the legend."""
    colors = [GREEN, GREY, RED, (200, 120, 40)]
    margin_l, margin_r, margin_t, margin_b = 50, 20, 50, 30
    canvas = np.full((height, width, 3), 255, np.uint8)
    x0, x1, y0, y1 = margin_l, width - margin_r, margin_t, height - margin_b
    top = max(1.0, max(max(v) for v in per_clip.values()))
    count = max(len(v) for v in per_clip.values())
    to_px = lambda i, v: (int(x0 + (x1 - x0) * i / max(1, count - 1)), int(y1 - (y1 - y0) * v / top))
    cv2.rectangle(canvas, (x0, y0), (x1, y1), GREY, 1)
    for value in np.arange(0, top + 1e-9, 0.5):
        y = to_px(0, value)[1]
        cv2.line(canvas, (x0, y), (x1, y), GREY, 1)
        cv2.putText(canvas, f"{value:.1f}", (x0 - 36, y + 5), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
    cv2.putText(canvas, "observer WER per test clip", (x0, 20), FONT, 0.55, BLACK, 1, cv2.LINE_AA)
    for k, (label, values) in enumerate(per_clip.items()):
        color = colors[k % len(colors)]
        points = np.array([to_px(i, v) for i, v in enumerate(values)], np.int32)
        cv2.polylines(canvas, [points], False, color, 1, cv2.LINE_AA)
        for point in points:
            cv2.circle(canvas, tuple(int(c) for c in point), 3, color, -1, cv2.LINE_AA)
        cv2.putText(canvas, label, (x0 + 10 + 230 * k, 42), FONT, 0.45, color, 1, cv2.LINE_AA)
    return canvas


def gan_health(train_log: List[Dict], history: List[Dict]) -> Dict:
    """Ranges of the discriminator's losses over the periodic training means, its best accuracy, and
    whether it collapsed (a loss mean above COLLAPSED_LOSS or below VANISHED_LOSS)."""
    if not train_log:
        return {}
    real = [r["disc_real"] for r in train_log]
    fake = [r["disc_fake"] for r in train_log]
    acc = [r.get("disc_acc", 0.5) for r in train_log]
    collapsed = any(v > COLLAPSED_LOSS or v < VANISHED_LOSS for v in real + fake)
    return {"disc_real_range": [min(real), max(real)], "disc_fake_range": [min(fake), max(fake)],
            "disc_acc_max": max(acc), "valid_disc_acc": [h.get("disc_acc") for h in history],
            "collapsed": collapsed}


def _load_json(path: str) -> Dict:
    if not os.path.isfile(path):
        raise TalkLipError(f"{path} does not exist: run quickstart.sh (or the step that writes it) first")
    with open(path) as handle:
        return json.load(handle)


def _optional_json(path: str) -> Optional[Dict]:
    return _load_json(path) if os.path.isfile(path) else None


def quickstart_summary(run_dir: str, clip: str, seconds: Dict[str, int], dub_face: Optional[str] = None,
                       dub_speech: Optional[str] = None, expert_path: Optional[str] = None,
                       observer_path: Optional[str] = None) -> Dict:
    """Write the pictures and summary.json of a quickstart run; return the summary. The observer's WERs
    (observer_<run>.json) and the ablation (synt_ablation, quality_/mouth_sync_ablation.json) are
    included when the run wrote them. The readers' checkpoints are <run_dir>/expert.pt and observer.pt
    unless given (readers trained once and shipped)."""
    expert_path = expert_path or f"{run_dir}/expert.pt"
    observer_path = observer_path or f"{run_dir}/observer.pt"
    corpus = f"{run_dir}/corpus"
    lists = f"{run_dir}/lists" if os.path.isdir(f"{run_dir}/lists") else corpus
    runs = {tag: f"{run_dir}/synt_{tag}/{clip}.mp4" for tag in ("before", "after")}
    write_png(f"{run_dir}/mouth_sync.png", mouth_sync_figure(corpus, clip, {
        "before training": runs["before"], "after training": runs["after"]}))
    with np.load(f"{corpus}/gt/{clip}.npz") as data:
        readable = "viseme" in data.files
    if readable:
        with open(f"{lists}/test.txt") as handle:
            test = [line.split()[0] for line in handle if line.strip()]
        write_png(f"{run_dir}/samples.png", viseme_grid(corpus, f"{run_dir}/synt_after", test, f"{corpus}/bbx"))
    else:
        write_png(f"{run_dir}/samples.png", sample_grid(corpus, runs["after"], clip, f"{corpus}/bbx"))
    tags = ("before", "after") + (("ablation",) if os.path.isdir(f"{run_dir}/synt_ablation") else ())
    quality = {t: _load_json(f"{run_dir}/quality_{t}.json") for t in tags}
    sync = {t: _load_json(f"{run_dir}/mouth_sync_{t}.json") for t in tags}
    dub = _load_json(f"{run_dir}/mouth_sync_dubbed.json")
    run = _load_json(f"{run_dir}/train/train_summary.json")
    expert = _load_json(f"{run_dir}/expert.json")
    observer = {t: _optional_json(f"{run_dir}/observer_{t}.json") for t in ("ground_truth",) + tags}
    observer = {t: v for t, v in observer.items() if v is not None}
    if observer:
        write_png(f"{run_dir}/observer_wer.png", observer_figure(
            {f"{t.replace('_', ' ')} (WER {v['wer']:.2f})": [row["wer"] for row in v["per_clip"]]
             for t, v in observer.items()}))
    summary = {
        "paths": {"corpus": corpus, "expert": expert_path, "checkpoints": f"{run_dir}/train",
                  "generator": run["checkpoint"], "tensorboard": f"{run_dir}/train/tb",
                  "synthesized_before": f"{run_dir}/synt_before", "synthesized_after": f"{run_dir}/synt_after",
                  "dubbed": f"{run_dir}/dubbed.mp4", "mouth_sync_plot": f"{run_dir}/mouth_sync.png",
                  "sample_grid": f"{run_dir}/samples.png",
                  **({"observer": observer_path, "observer_plot": f"{run_dir}/observer_wer.png"}
                     if observer else {})},
        "metrics": {t: {"psnr": quality[t]["psnr"], "ssim": quality[t]["ssim"], "mouth_sync": sync[t]["r"],
                        "clips": quality[t]["clips"],
                        **({"observer_wer": observer[t]["wer"]} if t in observer else {})} for t in tags},
        "dubbed": {"mouth_sync": dub["r"], "frames": dub["frames"], "face_clip": dub_face, "speech_clip": dub_speech},
        "training": {"steps": run["step"], "stage_reached": run["stage"], "stage_name": run["stage_name"],
                     "precision": run.get("precision", "fp32"),
                     "validations_in_stage_2": sum(h["stage"] == 2 for h in run["history"]),
                     "rollbacks": run["rollbacks"], "gan": gan_health(run.get("train_log", []), run["history"]),
                     "validation": [{k: h[k] for k in ("step", "stage", "l1", "token_acc", "disc_acc") if k in h}
                                    for h in run["history"]]},
        "expert": {k: expert[k] for k in ("token_acc", "token_acc_blank", "train_token_acc", "train_token_acc_blank",
                                          "wer", "wer_blank", "test_wer", "test_wer_blank", "test_token_acc",
                                          "test_token_acc_blank", "trained") if k in expert},
        "seconds": seconds,
    }
    leakage = _optional_json(f"{run_dir}/leakage.json")
    if leakage:
        summary["leakage"] = {k: leakage[k] for k in ("motion", "source_motion", "leak_r", "clips") if k in leakage}
    if observer:
        summary["observer"] = {"wer": {t: v["wer"] for t, v in observer.items()},
                               "clips": observer["ground_truth"]["clips"] if "ground_truth" in observer else None}
        reader = _optional_json(f"{run_dir}/observer.json")
        if reader:
            summary["observer"]["reader"] = {k: reader[k] for k in ("wer", "wer_blank", "test_wer", "test_wer_blank",
                                                                    "trained") if k in reader}
    with atomic_output(f"{run_dir}/summary.json") as tmp, open(tmp, "w") as handle:
        json.dump(summary, handle, indent=1)
    return summary


def print_summary(summary: Dict, run_dir: str) -> None:
    m, t, e, g = summary["metrics"], summary["training"], summary["expert"], summary["training"]["gan"]
    print(f"\nquickstart finished in {summary['seconds'].get('total', 0)}s")
    for tag in m:
        label = "no lip loss:" if tag == "ablation" else tag + " training:"
        print(f"  {label:17s}PSNR {m[tag]['psnr']:.2f} dB, SSIM {m[tag]['ssim']:.3f}, "
              f"mouth sync r {m[tag]['mouth_sync']:.3f}"
              + (f", observer WER {m[tag]['observer_wer']:.3f}" if "observer_wer" in m[tag] else "")
              + f" ({m[tag]['clips']} test clips)")
    if "observer" in summary and "ground_truth" in summary["observer"]["wer"]:
        print(f"  {'ground truth:':17s}observer WER {summary['observer']['wer']['ground_truth']:.3f} "
              f"(the real test videos)")
    print(f"  {'dubbed clip:':17s}mouth sync r {summary['dubbed']['mouth_sync']:.3f} against its driving speech")
    if "leakage" in summary:
        k = summary["leakage"]
        print(f"  {'silent speech:':17s}mouth motion {k['motion']:.2f} (the clips' own {k['source_motion']:.2f}), "
              f"r with the clips' own mouths {k['leak_r']:.3f} ({k['clips']} test clips dubbed with silence)")
    print(f"  {'training:':17s}stage {t['stage_reached']} ({t['stage_name']}) in {t['steps']} {t['precision']} steps, "
          f"{t['validations_in_stage_2']} validations in stage 2, {t['rollbacks']} rollbacks")
    if g:
        print(f"  {'GAN:':17s}discriminator loss real {g['disc_real_range'][0]:.2f}-{g['disc_real_range'][1]:.2f}, "
              f"fake {g['disc_fake_range'][0]:.2f}-{g['disc_fake_range'][1]:.2f}, best accuracy "
              f"{g['disc_acc_max']:.2f}; {'COLLAPSED' if g['collapsed'] else 'no collapse'}")
    if e and ("token_acc" in e or "test_wer" in e):
        held_out = (f"WER {e['test_wer']:.3f} on the test clips ({e['test_wer_blank']:.3f} with the video blanked), "
                    if "test_wer" in e else "")
        acc = (f"token accuracy {e['token_acc']:.3f} on held-out clips ({e['token_acc_blank']:.3f} with the video "
               f"blanked)" if "token_acc" in e else "")
        parts = [(held_out + acc).rstrip(", ")]
        if "train_token_acc" in e:
            parts.append(f"{e['train_token_acc']:.3f} on its training clips ({e['train_token_acc_blank']:.3f} blanked)")
        if "trained" in e:
            parts.append("trained once and shipped (weights/README.md)")
        print(f"  {'expert:':17s}" + ", ".join(parts))
    print_paths(summary, run_dir)


def print_paths(summary: Dict, run_dir: str) -> None:
    """A run's files, one per line, as every summary ends."""
    for key, value in summary["paths"].items():
        print(f"  {key + ':':19s}{value}")
    print(f"  {'summary:':19s}{run_dir}/summary.json")


def parse_seconds(text: str) -> Dict[str, int]:
    """--seconds' 'name=seconds,name=seconds' as a dict."""
    return {k: int(v) for k, v in (item.split("=") for item in text.split(",") if item)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True, help="the quickstart's --out_dir")
    parser.add_argument("--clip", required=True, help="test clip shown in the pictures (<spk>/<clip>)")
    parser.add_argument("--dub_face", default=None, help="the clip whose face was dubbed (recorded in the summary)")
    parser.add_argument("--dub_speech", default=None, help="the clip whose speech drove the dub")
    parser.add_argument("--expert", default=None, help="the expert's checkpoint (default <run_dir>/expert.pt)")
    parser.add_argument("--observer", default=None, help="the observer's checkpoint (default <run_dir>/observer.pt)")
    parser.add_argument("--seconds", default="", help="timings to record, as name=seconds,name=seconds")
    return parser.parse_args(argv)


def main(args) -> int:
    summary = quickstart_summary(args.run_dir, args.clip, parse_seconds(args.seconds), args.dub_face, args.dub_speech, args.expert,
                                 args.observer)
    print_summary(summary, args.run_dir)
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
