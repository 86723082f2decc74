"""Identity leakage: does the dubbed mouth still move with the source clip's own speech?

Each test clip is dubbed with silence of its own length (``dubbing.dub``, the options a user dubs with:
``--reference``, ``--paste``). A generator that follows the new speech keeps the mouth still; one that
copies its reference (each frame's own crop, under ``--reference own``) moves it as the source speaker
did. Two readings of the silent dubs, beside LSE-C/D:

- on the synthetic corpus (``--gt_root``): ``motion``, the std over frames of the mouth-darkness reading
  (``evaluation.mouth_sync``'s, at the ground-truth mouth), against ``source_motion``, the same reading
  of the clip itself; and ``leak_r``, its Pearson r with the clip's true opening (how much of the old
  mouth came through);
- with SyncNet (``--initial_model``, and ``--audio_root`` for the clips' own speech): LSE-C / LSE-D of the
  silent dub against the clip's original speech (a high LSE-C: the mouth still follows what was said).

    python -m evaluation.leakage --ckpt_path G.pth --video_root CORPUS/main --filelist test.txt \
        --out_root runs/leak --gt_root CORPUS/gt [--audio_root A --initial_model syncnet_v2.model]
"""
import argparse
import dataclasses
import os
from typing import Dict, Optional

import numpy as np
import soundfile

from dubbing import SynthesisOptions, dub
from dubbing.reference import check_reference
from evaluation.common import ClipRun, add_clip_args, clip_run, evaluate_clips, exit_status, file_identity, scored
from evaluation.mouth_sync import darkness_series, load_ground_truth, pearson
from face_detection import S3FD_HELP
from face_detection.tracking import TrackingOptions
from utils.audio import AUDIO_RATE_HZ, load_audio
from utils.cli import add_device_arg
from utils.errors import TalkLipError, one_line, run_cli
from utils.fileio import read_filelist
from utils.video import probe_video


@dataclasses.dataclass
class LeakageOptions:
    video_root: str                        # the clips, <name>.mp4
    out_root: str                          # their silent dubs go here, <name>.mp4
    gt_root: Optional[str] = None          # the synthetic corpus' gt/<name>.npz: motion and leak_r
    audio_root: Optional[str] = None       # the clips' own speech <name>.wav: LSE against it
    initial_model: Optional[str] = None    # syncnet_v2.model
    reference: str = "own"
    paste: str = "mouth"


def silent_dubs(generator, detector, names, opts: LeakageOptions, device: str = "cpu", log=print) -> None:
    """Dub every clip of ``names`` with silence as long as the clip into ``opts.out_root`` (kept across runs)."""
    synthesis = SynthesisOptions(device=device, progress=False, reference=check_reference(opts.reference),
                                 paste=opts.paste)
    for name in names:
        out = os.path.join(opts.out_root, f"{name}.mp4")
        if os.path.isfile(out):
            continue
        video = os.path.join(opts.video_root, f"{name}.mp4")
        info = probe_video(video)
        silence = os.path.join(opts.out_root, f".{os.path.basename(name)}.silence.wav")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        soundfile.write(silence, np.zeros(int(round(info.num_frames / info.fps * AUDIO_RATE_HZ)), np.int16),
                        AUDIO_RATE_HZ)
        try:
            dub(generator, video, silence, out, detector, synthesis, TrackingOptions(max_gap_s=None))
        except TalkLipError as exc:
            log(f"leakage: {name}: {one_line(exc)}")
        finally:
            os.remove(silence)


def clip_leakage(name: str, opts: LeakageOptions, syncnet=None) -> Dict:
    dubbed = os.path.join(opts.out_root, f"{name}.mp4")
    row: Dict = {}
    if opts.gt_root:
        gt = load_ground_truth(os.path.join(opts.gt_root, f"{name}.npz"))
        count = min(len(gt["mouth_opening"]), probe_video(dubbed).num_frames)
        index = np.arange(count)
        darkness = darkness_series(dubbed, gt, index)
        source = darkness_series(os.path.join(opts.video_root, f"{name}.mp4"), gt, index)
        row.update(frames=count, motion=float(darkness.std()), source_motion=float(source.std()),
                   leak_r=pearson(darkness, gt["mouth_opening"][:count]))
    if syncnet is not None:
        from evaluation.sync_eval import lse, read_sync_frames
        frames, _ = read_sync_frames(dubbed)
        scores = lse(frames, load_audio(os.path.join(opts.audio_root, f"{name}.wav")), syncnet)
        row.update(silent_lse_c=scores["lse_c"], silent_lse_d=scores["lse_d"])
    return row


def evaluate(opts: LeakageOptions, run: ClipRun, generator, detector, device: str = "cpu", names=None) -> Dict:
    """Dub the clips with silence (those not dubbed yet), then score them: per clip and the means."""
    if not opts.gt_root and not opts.initial_model:
        raise TalkLipError("the leakage measure needs --gt_root (the synthetic corpus' ground truth) or "
                           "--initial_model with --audio_root (SyncNet against the clips' own speech)")
    if opts.initial_model and not opts.audio_root:
        raise TalkLipError("--initial_model scores the silent dubs against the clips' own speech: give --audio_root")
    names = names if names is not None else read_filelist(run.filelist)
    silent_dubs(generator, detector, names, opts, device)
    syncnet = None
    if opts.initial_model:
        from evaluation.sync_eval import load_syncnet
        syncnet = load_syncnet(opts.initial_model, device)
    references = lambda n: [os.path.join(opts.video_root, f"{n}.mp4")] + (
        [os.path.join(opts.gt_root, f"{n}.npz")] if opts.gt_root else []) + (
        [os.path.join(opts.audio_root, f"{n}.wav")] if opts.initial_model else [])
    return evaluate_clips(run, f"leakage_{opts.reference}_{opts.paste}", lambda n: clip_leakage(n, opts, syncnet),
                          opts.out_root, "--out_root", names=names, references=references,
                          weight="frames" if opts.gt_root else None,
                          settings={"reference": opts.reference, "paste": opts.paste,
                                    "model": file_identity(opts.initial_model)})


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True, help="TalkLip generator checkpoint (.pth)")
    parser.add_argument("--video_root", required=True, help="folder of the clips <name>.mp4")
    parser.add_argument("--out_root", required=True, help="folder for their silent dubs (kept: a rerun scores them)")
    parser.add_argument("--gt_root", default=None, help="the synthetic corpus' gt/ folder: motion and leak_r")
    parser.add_argument("--audio_root", default=None, help="the clips' own speech <name>.wav, for SyncNet")
    parser.add_argument("--initial_model", default=None, help="syncnet_python's syncnet_v2.model: LSE-C/D")
    parser.add_argument("--reference", default="own", help="the dub's --reference (own, first, closed or N)")
    parser.add_argument("--paste", choices=("mouth", "face"), default="mouth", help="the dub's --paste")
    parser.add_argument("--s3fd_path", default=None, help=S3FD_HELP)
    add_device_arg(parser)
    add_clip_args(parser)
    return parser.parse_args(argv)


def main(args) -> int:
    from face_detection import build_detector
    from models.talklip import load_talklip, prepare_for_inference
    from utils.device import resolve_device
    device = resolve_device(args.device)
    generator = prepare_for_inference(load_talklip(args.ckpt_path, device))
    detector = build_detector(args.s3fd_path, device)
    opts = LeakageOptions(args.video_root, args.out_root, args.gt_root, args.audio_root, args.initial_model,
                          check_reference(args.reference), args.paste)
    run = clip_run(args)
    summary = evaluate(opts, run, generator, detector, str(device))
    parts = []
    if args.gt_root:
        parts.append(f"mouth motion under silence {summary['motion']:.2f} (the clips' own {summary['source_motion']:.2f}),"
                     f" r with the clips' own mouths {summary['leak_r']:.3f}")
    if args.initial_model:
        parts.append(f"silent-speech LSE-C {summary['silent_lse_c']:.3f}, LSE-D {summary['silent_lse_d']:.3f}")
    print(f"leakage (--reference {opts.reference}): {'; '.join(parts)} over {scored(summary)}")
    return exit_status([summary], run.allow_missing)


if __name__ == "__main__":
    run_cli(main, parse_args())
