"""Every metric of the paper on a synthesized folder, printed as the paper's table.

    python -m evaluation.eval_all --synt_root SYNT --filelist test.txt --orig_root LRS2/main \
        --bbx_root LRS2/bbx --syncnet_path syncnet_v2.model --observer1_path observer1.pt \
        --observer2_path conformer.pth [--out_dir SYNT/eval]

PSNR/SSIM (``visual_quality``), LSE-C/LSE-D (``sync_eval``), WER by observer 1 (AV-HuBERT,
``avhubert_wer``) and observer 2 (conformer, ``teacher_force_wer``); ``--lrw`` replaces the WERs by
LRW word accuracy. A metric whose model is not given is left out of the table, with a note. Writes
``results.json`` (summary and per-clip values), ``per_clip.csv`` and ``table.md`` in ``--out_dir``;
per-clip results are cached, so an interrupted run picks up where it stopped.
"""
import argparse
import csv
import json
import os
import sys

from evaluation import avhubert_wer, sync_eval, teacher_force_wer, visual_quality
from evaluation.common import ClipRun, exit_status, scored
from utils.cli import add_device_arg, non_negative_int
from utils.errors import TalkLipError, run_cli
from utils.fileio import atomic_output, read_filelist

COLUMNS = [("PSNR", "visual", "psnr", "{:.3f}"), ("SSIM", "visual", "ssim", "{:.4f}"),
           ("LSE-C", "sync", "lse_c", "{:.3f}"), ("LSE-D", "sync", "lse_d", "{:.3f}"),
           ("WER1 (AV-HuBERT)", "wer1", "wer", "{:.2%}"), ("WER2 (conformer)", "wer2", "wer", "{:.2%}")]
LRW_COLUMNS = COLUMNS[:4] + [("ACC (AV-HuBERT)", "lrw", "acc", "{:.2%}")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--synt_root", required=True, help="folder of synthesized <name>.mp4 (inf_test.py's --save_root)")
    p.add_argument("--filelist", required=True, help="the clip list given to inf_test.py")
    p.add_argument("--orig_root", required=True, help="folder of the original <name>.mp4 (LRS2 main/)")
    p.add_argument("--bbx_root", required=True, help="folder of <name>.npy face boxes")
    p.add_argument("--word_root", default=None, help="folder of <name>.txt transcripts (default: --orig_root)")
    p.add_argument("--syncnet_path", default=None, help="syncnet_python's syncnet_v2.model")
    p.add_argument("--observer1_path", default=None, help="AV-HuBERT seq2seq lip reader (observer 1)")
    p.add_argument("--task_state", default=None, help="dictionary/sentencepiece for observer 1 if not inside it")
    p.add_argument("--observer2_path", default=None, help="conformer lip reader (observer 2)")
    p.add_argument("--lrw", action="store_true", help="LRW layout: word accuracy instead of WER")
    p.add_argument("--legacy_uint8_psnr", action="store_true", help="the original's wrapped-around PSNR")
    p.add_argument("--vshift", type=non_negative_int, default=15, help="largest audio-video offset SyncNet tries, in frames")
    add_device_arg(p)
    p.add_argument("--out_dir", default=None, help="where results go (default: <synt_root>/eval)")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    p.add_argument("--allow_missing", action="store_true",
                   help="exit 0 when some listed clips are missing or fail (means are over the rest)")
    avhubert_wer.add_decode_args(p)
    args = p.parse_args(argv)
    args.word_root = args.word_root or args.orig_root
    args.out_dir = args.out_dir or os.path.join(args.synt_root, "eval")
    return args


def run_metrics(args) -> dict:
    names = read_filelist(args.filelist)
    run = ClipRun(filelist=args.filelist, cache_dir=os.path.join(args.out_dir, "cache"),
                  progress=not args.no_progress, allow_missing=args.allow_missing)
    results, notes = {}, []
    results["visual"] = visual_quality.evaluate(visual_quality.VisualQualityOptions(
        synt_root=args.synt_root, orig_root=args.orig_root, bbx_root=args.bbx_root,
        legacy_uint8_psnr=args.legacy_uint8_psnr), run, names)
    if args.syncnet_path:
        results["sync"] = sync_eval.evaluate(sync_eval.SyncOptions(
            data_root=args.synt_root, initial_model=args.syncnet_path, vshift=args.vshift, device=args.device),
            run, names)
    else:
        notes.append("LSE-C/LSE-D skipped: pass --syncnet_path syncnet_v2.model")
    if args.observer1_path:
        observer1 = avhubert_wer.LipReadingOptions(
            video_root=args.synt_root, ckpt_path=args.observer1_path, task_state=args.task_state,
            bbx_root=args.bbx_root, word_root=args.word_root, lrw=args.lrw, beam=args.beam,
            max_len_a=args.max_len_a, max_len_b=args.max_len_b, lenpen=args.lenpen, roi=args.roi, device=args.device)
        results["lrw" if args.lrw else "wer1"] = avhubert_wer.evaluate(observer1, run, names)
    else:
        notes.append("observer 1 skipped: pass --observer1_path (AV-HuBERT LRS2 lip reader)")
    if args.observer2_path and not args.lrw:
        results["wer2"] = teacher_force_wer.evaluate(teacher_force_wer.ConformerWerOptions(
            video_root=args.synt_root, ckpt_path=args.observer2_path, word_root=args.word_root, device=args.device),
            run, names)
    elif not args.lrw:
        notes.append("observer 2 skipped: pass --observer2_path (conformer lip reader)")
    return {"results": results, "notes": notes}


def markdown_table(results: dict, lrw: bool) -> str:
    cols = [c for c in (LRW_COLUMNS if lrw else COLUMNS) if c[1] in results]
    head = "| clips | " + " | ".join(c[0] for c in cols) + " |"
    rule = "| --- | " + " | ".join("---" for _ in cols) + " |"
    clips = results["visual"]["clips"]
    row = f"| {clips} | " + " | ".join(c[3].format(results[c[1]][c[2]]) for c in cols) + " |"
    lines = [head, rule, row]
    partial = [f"{c[0]} over {scored(results[c[1]])}" for c in cols if not results[c[1]]["complete"]]
    if partial:
        lines.append("\nonly part of the list was scored: " + "; ".join(partial))
    return "\n".join(lines)


def write_outputs(args, report: dict) -> str:
    results = report["results"]
    table = markdown_table(results, args.lrw)
    os.makedirs(args.out_dir, exist_ok=True)
    summary = {k: {f: v for f, v in r.items() if f != "per_clip"} for k, r in results.items()}
    with atomic_output(os.path.join(args.out_dir, "results.json")) as tmp, open(tmp, "w") as h:
        json.dump({"summary": summary, "notes": report["notes"],
                   "per_clip": {k: r["per_clip"] for k, r in results.items()}}, h, indent=1)
    per_name = {}
    for key, r in results.items():
        for row in r["per_clip"]:
            for field, value in row.items():
                if field != "name" and isinstance(value, (int, float)):
                    per_name.setdefault(row["name"], {})[f"{key}.{field}"] = value
    fields = sorted({f for v in per_name.values() for f in v})
    with atomic_output(os.path.join(args.out_dir, "per_clip.csv")) as tmp, open(tmp, "w", newline="") as h:
        writer = csv.writer(h)
        writer.writerow(["name"] + fields)
        for name, values in per_name.items():
            writer.writerow([name] + [values.get(f, "") for f in fields])
    with atomic_output(os.path.join(args.out_dir, "table.md")) as tmp, open(tmp, "w") as h:
        h.write(table + "\n")
    return table


def main(args) -> int:
    for path in (args.syncnet_path, args.observer1_path, args.observer2_path):
        if path and not os.path.isfile(path):
            raise TalkLipError(f"model file {path} does not exist: check the path")
    report = run_metrics(args)
    table = write_outputs(args, report)
    for note in report["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(table)
    print(f"\nresults: {args.out_dir}/results.json, per_clip.csv, table.md")
    return exit_status(list(report["results"].values()), args.allow_missing)


if __name__ == "__main__":
    run_cli(main, parse_args())
