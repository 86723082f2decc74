"""A web page for dubbing: upload a face video (or a picture) and speech, pick the face, get the video.

    python app.py --ckpt_path talklip.pth [--host 127.0.0.1] [--port 7860] [--device cpu]

Without --ckpt_path the quickstart's last checkpoint is used when runs/quickstart exists. The page
calls the same dubbing function as inf_demo.py (dubbing.dub). It listens on 127.0.0.1
unless --host says otherwise, refuses uploads past --max_upload_mb and speech or video past
--max_seconds, runs one dub at a time (others wait in a queue that shows their place), and keeps
each job's files in its own folder under one temporary folder, removed after --keep_minutes and when
the page stops.
"""
import argparse
import glob
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np

from face_detection import S3FD_HELP, build_detector
from face_detection.tracking import DEFAULT_DETECT_EVERY, DEFAULT_DETECT_MAX_SIDE, DEFAULT_MAX_GAP_S, TrackingOptions
from face_detection.tracking import KeyFrameDetector, nearest_face
from dubbing import SynthesisOptions, dub
from dubbing.options import PASTE_MODES
from dubbing.reference import REFERENCE_CHOICES, check_reference
from dubbing.source import is_image, read_image
from models.talklip import load_talklip, prepare_for_inference
from utils.audio import speech_seconds
from utils.cli import add_device_arg, positive_float, positive_int
from utils.device import PRECISIONS, autocast_dtype, resolve_device
from utils.errors import TalkLipError, Terminated, one_line, run_cli
from utils.ffmpeg import run_ffmpeg
from utils.video import VideoReader, probe_video

QUICKSTART_CHECKPOINTS = "runs/quickstart/train/checkpoint_step*.pth"
DEFAULT_MAX_UPLOAD_MB = 200
DEFAULT_MAX_SECONDS = 300.0
DEFAULT_KEEP_MINUTES = 60.0
STOP_WAIT_S = 10.0        # on SIGTERM, how long a running dub gets to stop at its next progress report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt_path", default=None,
                   help="TalkLip generator checkpoint (.pth); default: the quickstart's last one")
    p.add_argument("--s3fd_path", default=None, help=S3FD_HELP)
    add_device_arg(p)
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="generator precision: auto (bf16 where the CPU or GPU computes bf16 in hardware, else fp32), "
                        "fp32, bf16, or fp16 (GPU only)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=positive_int, default=7860, help="port to listen on")
    p.add_argument("--max_upload_mb", type=positive_float, default=DEFAULT_MAX_UPLOAD_MB,
                   help="largest file a visitor may upload, in MB")
    p.add_argument("--max_seconds", type=positive_float, default=DEFAULT_MAX_SECONDS,
                   help="longest speech (and video) accepted, in seconds")
    p.add_argument("--keep_minutes", type=positive_float, default=DEFAULT_KEEP_MINUTES,
                   help="a job's files are removed this long after it ran")
    p.add_argument("--workdir", default=None, help="where jobs' files go (default: a new temporary folder)")
    return p.parse_args(argv)


def default_checkpoint(root: str = ".") -> str:
    found = sorted(glob.glob(os.path.join(root, QUICKSTART_CHECKPOINTS)))
    if not found:
        raise TalkLipError("no --ckpt_path given and no quickstart checkpoint in runs/quickstart/train: pass "
                           "--ckpt_path talklip.pth (a released TalkLip generator or one train.py wrote)")
    return found[-1]


# ------------------------------------------------------------------------------- what the page does
@dataclass
class Faces:
    """The faces found on the preview frame, as (n, 4) int64 x1 y1 x2 y2 boxes."""
    boxes: np.ndarray

    def centre(self, number: int) -> Tuple[float, float]:
        x1, y1, x2, y2 = self.boxes[number - 1]
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0

    def at(self, x: float, y: float) -> int:
        """The number (1-based) of the face under (x, y), or of the one whose centre is nearest."""
        inside = [k for k, (x1, y1, x2, y2) in enumerate(self.boxes) if x1 <= x <= x2 and y1 <= y <= y2]
        if inside:
            return inside[0] + 1
        return nearest_face(self.boxes, (x, y)) + 1


def first_frame(path: str) -> np.ndarray:
    if is_image(path):
        return read_image(path)
    with VideoReader(path, allow_truncated=True) as reader:
        for frame in reader:
            return frame
    raise TalkLipError(f"{path} has no frame: give a video with a picture")


def find_faces(frame: np.ndarray, detector) -> Faces:
    boxes = KeyFrameDetector(detector, DEFAULT_DETECT_MAX_SIDE)([frame])[0]
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable") if len(boxes) else []
    return Faces(np.asarray(boxes, np.int64).reshape(-1, 4)[order])          # 1 = the largest


def draw_faces(frame: np.ndarray, faces: Faces, chosen: Optional[int]) -> np.ndarray:
    """An RGB copy of a BGR frame with every face boxed and numbered; the chosen one in green."""
    out = frame.copy()
    thick = max(2, round(max(frame.shape[:2]) / 300))
    for number, (x1, y1, x2, y2) in enumerate(faces.boxes, start=1):
        colour = (0, 200, 0) if number == (chosen or 1) else (0, 160, 255)
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), colour, thick)
        cv2.putText(out, str(number), (int(x1) + thick, int(y1) + 12 * thick), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, colour, thick)
    return out[..., ::-1].copy()


def check_limits(video: str, speech: str, max_upload_mb: float, max_seconds: float) -> None:
    """One-line refusals for inputs past the page's limits (bad files are refused by dub itself)."""
    for path, what in ((video, "face video"), (speech, "speech")):
        size_mb = os.path.getsize(path) / 2 ** 20
        if size_mb > max_upload_mb:
            raise TalkLipError(f"the {what} {os.path.basename(path)} is {size_mb:.0f} MB, over this page's "
                               f"{max_upload_mb:g} MB limit: upload a shorter or smaller file")
    if speech_seconds(speech, max_seconds) > max_seconds:       # decoded as a stream, stopping at the limit
        raise TalkLipError(f"the speech lasts over this page's {max_seconds:g} s limit: "
                           f"upload a shorter clip (or start the page with a larger --max_seconds)")
    if not is_image(video):
        info = probe_video(video)
        if info.num_frames / info.fps > max_seconds:
            raise TalkLipError(f"the face video lasts {info.num_frames / info.fps:.1f} s, over this page's "
                               f"{max_seconds:g} s limit: upload a shorter clip")


def browser_playable(path: str, out_dir: str) -> Tuple[str, Optional[str]]:
    """The dub as browsers play it (H.264 4:2:0 needs even sizes): the file itself, or a copy with an
    odd width or height cropped by one pixel, and a note saying so."""
    info = probe_video(path)
    if info.width % 2 == 0 and info.height % 2 == 0:
        return path, None
    even = os.path.join(out_dir, "dubbed_even.mp4")
    run_ffmpeg(["-i", path, "-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                "-crf", "18", "-c:a", "copy", "-movflags", "+faststart", even], source=path)
    return even, (f"the video is {info.width}x{info.height}; browsers play only even sizes, so the page shows "
                  f"and gives it cropped to {info.width // 2 * 2}x{info.height // 2 * 2}")


def timeline_strip(with_face: List[bool], width: int = 600, height: int = 24) -> np.ndarray:
    """An RGB strip, left to right through the dub: green where a face was generated, grey where the
    frame passed through untouched."""
    flags = np.asarray(with_face, bool)
    columns = flags[np.minimum((np.arange(width) * len(flags)) // width, len(flags) - 1)]
    strip = np.where(columns[None, :, None], np.array([60, 170, 60], np.uint8), np.array([150, 150, 150], np.uint8))
    return np.ascontiguousarray(np.broadcast_to(strip, (height, width, 3)))


# Advice written for the command-line tools that means nothing to someone using the page.
TOOL_ADVICE = (("or remove it from the file list", "or upload another file"),
               ("check --video_path", "upload it again"), ("check --video_root and the file list", "upload it again"))


def for_visitor(message: str, uploads: dict) -> str:
    """An error as the page shows it: each upload's server-side path becomes what the visitor sent (its
    file name, or ``uploads[path]`` when it has none), and advice about file lists or flags becomes
    advice about the upload."""
    for path, what in uploads.items():
        if path:
            name = os.path.basename(path)
            message = message.replace(path, f"{what} ({name})" if name else what)
    for tool, page in TOOL_ADVICE:
        message = message.replace(tool, page)
    return message


def clean_old_jobs(workdir: str, keep_s: float) -> None:
    now = time.time()
    for job in glob.glob(os.path.join(workdir, "job-*")):
        if now - os.path.getmtime(job) > keep_s:
            shutil.rmtree(job, ignore_errors=True)


# ------------------------------------------------------------------------------- the page
class Stopping:
    """Tells a running dub that the page is stopping (SIGTERM), and when no dub runs any more."""

    def __init__(self):
        self.asked, self.idle = threading.Event(), threading.Event()
        self.idle.set()

    def check(self) -> None:
        if self.asked.is_set():
            raise TalkLipError("the page is stopping: the dub was cancelled")


def build_page(generator, detector, device, dtype, workdir: str, max_upload_mb: float, max_seconds: float,
               keep_minutes: float, stopping: Optional[Stopping] = None):
    import gradio as gr
    stopping = stopping or Stopping()

    def progress_report(progress):
        def report(stage, done, total):
            stopping.check()                  # SIGTERM: the dub stops at its next progress report
            progress((done, total), desc=stage, unit="frames")
        return report

    def preview(video_file):
        """The first frame with its faces drawn; the frame and boxes are kept for clicks and the dub."""
        nothing = (None, None, None, gr.update(choices=["largest"], value="largest"))
        if not video_file:
            return *nothing, ""
        try:
            frame = first_frame(video_file)
            faces = find_faces(frame, detector)
        except TalkLipError as exc:
            return *nothing, f"error: {for_visitor(one_line(exc), {video_file: 'the face video'})}"
        choices = ["largest"] + [str(k) for k in range(1, len(faces.boxes) + 1)]
        note = (f"{len(faces.boxes)} face(s) found on the first frame; click one to dub it"
                if len(faces.boxes) else "no face found on the first frame")
        return draw_faces(frame, faces, None), frame, faces.boxes.tolist(), gr.update(choices=choices, value="largest"), note

    def clicked(frame, boxes, evt: gr.SelectData):
        if frame is None or not boxes:
            return gr.update(), gr.update()
        faces = Faces(np.asarray(boxes, np.int64).reshape(-1, 4))
        number = faces.at(*evt.index[:2])
        return draw_faces(frame, faces, number), str(number)

    def picked(frame, boxes, choice):
        if frame is None or not boxes or choice == "largest":
            return gr.update()
        return draw_faces(frame, Faces(np.asarray(boxes, np.int64).reshape(-1, 4)), int(choice))

    def run(video_file, speech_file, boxes, choice, detect_every, detect_max_side, smooth_window, max_gap, blend,
            paste, reference, progress=gr.Progress()):
        clean_old_jobs(workdir, keep_minutes * 60)
        if not video_file or not speech_file:
            return None, None, None, "error: give a face video (or picture) and speech first"
        job = tempfile.mkdtemp(prefix="job-", dir=workdir)
        started = time.time()
        try:
            check_limits(video_file, speech_file, max_upload_mb, max_seconds)
            follow = None
            if choice != "largest" and boxes:
                follow = Faces(np.asarray(boxes, np.int64).reshape(-1, 4)).centre(int(choice))
            tracking = TrackingOptions(detect_every=int(detect_every), detect_max_side=int(detect_max_side),
                                       max_gap_s=float(max_gap), smooth_window=int(smooth_window), follow=follow)
            opts = SynthesisOptions(feather=int(blend), device=str(device), progress=False, paste=paste, dtype=dtype,
                                    reference=check_reference(str(reference).strip()),
                                    on_progress=progress_report(progress))
            out = os.path.join(job, "dubbed.mp4")
            stopping.idle.clear()
            try:
                result = dub(generator, video_file, speech_file, out, detector, opts, tracking)
            finally:
                stopping.idle.set()
            shown, note = browser_playable(out, job)
        except TalkLipError as exc:
            return None, None, None, f"error: {for_visitor(one_line(exc), {video_file: 'the face video', speech_file: 'the speech'})}"
        untouched = result.frames - result.frames_with_face
        lines = [f"**{result.frames} frames** at {result.fps:g} fps ({result.duration_s:.2f} s) in "
                 f"{time.time() - started:.1f} s",
                 f"- dubbed: {result.frames_with_face} frames; passed through untouched (no face): {untouched}",
                 f"- face detector run on {result.detected_frames} of {result.source_frames} source frames; "
                 f"no face found on {result.detection_misses} of them"]
        if result.reference_frame is not None:
            lines.append(f"- reference face: frame {result.reference_frame}")
        if result.damaged:
            lines.append(f"- warning: the video's frames stop after {result.decoded_frames} (a damaged file?)")
        if note:
            lines.append(f"- {note}")
        return shown, shown, timeline_strip(result.with_face), "\n".join(lines)

    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])   # no web fonts to fetch
    with gr.Blocks(title="talklip: dub a face", theme=theme, delete_cache=(600, int(keep_minutes * 60))) as page:
        gr.Markdown("## talklip: dub a face with new speech\nUpload a face video (or a picture) and speech; "
                    "click the face to dub when there are several; press **Dub**.")
        boxes = gr.State(None)             # the first frame's faces, (n, 4) as lists
        first = gr.State(None)             # the first frame itself (BGR), drawn again on a click
        with gr.Row():
            with gr.Column():
                video_in = gr.File(label="face video or picture", file_types=["video", "image"], elem_id="face_input")
                speech_in = gr.Audio(label="speech (file or microphone)", sources=["upload", "microphone"],
                                     type="filepath", elem_id="speech_input")
                face_pick = gr.Dropdown(["largest"], value="largest", label="face to dub", elem_id="face_pick")
                reference = gr.Dropdown(["own", *REFERENCE_CHOICES[1:]], value="own", allow_custom_value=True,
                                        elem_id="reference",
                                        label="reference face: own (each frame's, as the original), first, "
                                              "closed (most closed mouth) or a frame number")
                paste = gr.Radio(list(PASTE_MODES), value="mouth", elem_id="paste",
                                 label="paste the generated mouth region (the eyes stay sharp) or the whole face")
                with gr.Accordion("detection and blending", open=False):
                    detect_every = gr.Slider(1, 32, value=DEFAULT_DETECT_EVERY, step=1,
                                             label="detect every K-th frame (1: every frame, as the original)")
                    detect_max_side = gr.Slider(0, 1920, value=DEFAULT_DETECT_MAX_SIDE, step=32,
                                                label="detect on a copy this many pixels long (0: full size)")
                    smooth_window = gr.Slider(1, 15, value=5, step=1, label="smooth face boxes over N frames")
                    max_gap = gr.Slider(0, 2, value=DEFAULT_MAX_GAP_S, step=0.05,
                                        label="seconds without the face that are bridged (longer: untouched)")
                    blend = gr.Slider(0, 16, value=0, step=1, label="with the whole face: feather it over N pixels")
                run_button = gr.Button("Dub", variant="primary", elem_id="run")
            with gr.Column():
                face_view = gr.Image(label="faces on the first frame (click one)", interactive=False,
                                     elem_id="preview")
                face_note = gr.Markdown(elem_id="face_note")
                video_out = gr.Video(label="dubbed video", elem_id="dubbed", interactive=False)
                file_out = gr.File(label="download", elem_id="download")
                timeline = gr.Image(label="timeline: green dubbed, grey untouched", interactive=False,
                                    elem_id="timeline", height=60)
                report = gr.Markdown(elem_id="report")
        video_in.change(preview, [video_in], [face_view, first, boxes, face_pick, face_note])
        face_view.select(clicked, [first, boxes], [face_view, face_pick])
        face_pick.input(picked, [first, boxes, face_pick], [face_view])
        run_button.click(run, [video_in, speech_in, boxes, face_pick, detect_every, detect_max_side, smooth_window,
                               max_gap, blend, paste, reference], [video_out, file_out, timeline, report])
    return page


def main(args) -> int:
    ckpt = args.ckpt_path or default_checkpoint()
    device = resolve_device(args.device)
    dtype = autocast_dtype(args.precision, device)
    generator = prepare_for_inference(load_talklip(ckpt, device), dtype)
    detector = build_detector(args.s3fd_path, device)
    workdir = args.workdir or tempfile.mkdtemp(prefix="talklip-app-")
    os.makedirs(workdir, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = os.path.join(workdir, "uploads")     # uploads and results: inside workdir
    # gradio spools a request's files into Python's temporary folder before it checks their names (an upload
    # named '..' was refused but stayed there): that folder is inside workdir too, removed with it
    tempfile.tempdir = os.path.join(workdir, "spool")
    os.makedirs(tempfile.tempdir, exist_ok=True)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")          # the page phones nowhere
    stopping = Stopping()
    page = build_page(generator, detector, device, dtype, workdir, args.max_upload_mb, args.max_seconds,
                      args.keep_minutes, stopping)
    page.queue(default_concurrency_limit=1, max_size=32)
    print(f"talklip page on http://{args.host}:{args.port} (generator {ckpt}); files in {workdir}", file=sys.stderr)
    try:
        # the jobs' results lie in workdir, no longer inside Python's temporary folder (the spool is): gradio
        # hands back only files it is allowed to
        page.launch(server_name=args.host, server_port=args.port, max_file_size=f"{args.max_upload_mb}mb",
                    share=False, inbrowser=False, allowed_paths=[workdir])
    except (Terminated, KeyboardInterrupt) as stop:
        # A dub may be running in gradio's worker thread: let it stop and clean up, then leave without the
        # interpreter's shutdown, which tore down threads still running (abort: "terminate called without an
        # active exception", signal 6, instead of exit 143).
        stopping.asked.set()
        stopping.idle.wait(timeout=STOP_WAIT_S)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        print("terminated" if isinstance(stop, Terminated) else "interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(stop.exit_status if isinstance(stop, Terminated) else 130)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
