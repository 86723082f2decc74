"""Fingerprints of what the project makes, to prove a restructure changes no behaviour.

    python -m bench.fingerprint --out_dir /tmp/fp          # prints one JSON line

Everything goes through the command-line scripts (inf_demo.py, train_expert.py, train.py), whose
flags a restructure keeps, so the same command runs on the commits before and after one and the two
lines are compared. Made in ``--out_dir`` from fixed seeds:

- dubs by a random-weight generator (the cpu preset; a seeded .pth in the original layout) of: a clip
  with a cutaway, a still, speech shorter and longer than the video, a variable-frame-rate clip: the
  sha256 of each output file and of its decoded frames;
- an expert trained by train_expert.py for 20 steps on the synthetic corpus: the sha256 of its weights;
- 12 training steps of train.py through its three stages (4 each) under that expert: the sha256 of the
  generator's and the discriminator's weights and of the run's state file.

Runs are deterministic on one machine; compare lines made on the same machine.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import torch

from bench.media import random_generator, speech

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def sha256_tensors(state: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if torch.is_tensor(value):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def sha256_frames(path: str) -> str:
    capture, digest = cv2.VideoCapture(path), hashlib.sha256()
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        digest.update(frame.tobytes())
    capture.release()
    return digest.hexdigest()


def run(script: str, *args) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed: {proc.stderr.strip().splitlines()[-1:]}")


def head(width: int, height: int) -> np.ndarray:
    import skimage.data
    photo = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    return cv2.resize(photo[0:300, 100:360], (width, height))


def write_video(path: str, frames, fps: float = 25.0) -> None:
    from utils.ffmpeg import run_ffmpeg
    raw = path + ".png.d"
    os.makedirs(raw, exist_ok=True)
    for k, frame in enumerate(frames):
        cv2.imwrite(os.path.join(raw, f"{k:04d}.png"), frame)
    run_ffmpeg(["-framerate", repr(fps), "-i", os.path.join(raw, "%04d.png"), "-c:v", "libx264", "-crf", "12",
                "-pix_fmt", "yuv420p", path], source="fingerprint")


def dub_inputs(out: str) -> dict:
    """name -> (video or still, speech) for the dubbing cases."""
    face = np.full((240, 320, 3), 90, np.uint8)
    face[30:210, 100:250] = head(150, 180)
    moving = [np.roll(face, k % 12 - 6, axis=1) for k in range(40)]
    cutaway = moving[:15] + [np.full((240, 320, 3), (40, 120, 200), np.uint8)] * 15 + moving[15:25]
    write_video(os.path.join(out, "cut.mp4"), cutaway)
    write_video(os.path.join(out, "head.mp4"), moving)
    cv2.imwrite(os.path.join(out, "still.png"), face)
    from utils.ffmpeg import run_ffmpeg
    run_ffmpeg(["-i", os.path.join(out, "head.mp4"), "-vf", "setpts='if(lt(N,20),N*0.04,0.8+(N-20)*0.08)/TB'",
                "-fps_mode", "vfr", "-c:v", "libx264", "-crf", "12", os.path.join(out, "vfr.mp4")],
               source="fingerprint")
    for seconds in (0.8, 1.6, 4.4):
        speech(os.path.join(out, f"speech_{seconds}.wav"), seconds)
    return {"cutaway": ("cut.mp4", "speech_1.6.wav"), "still": ("still.png", "speech_0.8.wav"),
            "shorter_speech": ("head.mp4", "speech_0.8.wav"), "longer_speech": ("head.mp4", "speech_4.4.wav"),
            "vfr": ("vfr.mp4", "speech_1.6.wav")}


def dubs(out: str, flags=()) -> dict:
    ckpt = os.path.join(out, "generator.pth")
    random_generator(ckpt)
    found = {}
    for name, (video, wav) in dub_inputs(out).items():
        result = os.path.join(out, f"dub_{name}.mp4")
        run("inf_demo.py", "--video_path", os.path.join(out, video), "--wav_path", os.path.join(out, wav),
            "--ckpt_path", ckpt, "--save_path", result, "--device", "cpu", "--no_progress", *flags)
        found[name] = {"file": sha256_file(result), "frames": sha256_frames(result)}
    return found


def training(out: str) -> dict:
    from preparation.make_synthetic import make_corpus
    data = os.path.join(out, "corpus")
    make_corpus(data, num_clips=6, seed=7, min_words=2, max_words=3, use_espeak=False)
    env = dict(os.environ, PYTHONPATH=ROOT)
    for module, flag, folder in (("preparation.audio_extract", "--audio_root", "audio"),
                                 ("preparation.bbx_extract", "--bbx_root", "bbx")):
        subprocess.run([sys.executable, "-m", module, "--filelist", f"{data}/filelist.txt", "--video_root",
                        f"{data}/main", "--nshard", "1", flag, os.path.join(out, folder)], cwd=ROOT, env=env,
                       check=True, capture_output=True)
    expert = os.path.join(out, "expert.pt")
    run("train_expert.py", "--file_dir", data, "--video_root", f"{data}/main", "--word_root", f"{data}/main",
        "--out", expert, "--preset", "tiny", "--steps", 20, "--batch_size", 2, "--vocab_size", 60, "--seed", 3,
        "--device", "cpu", "--no_progress")
    ckpts = os.path.join(out, "run")
    run("train.py", "--file_dir", data, "--video_root", f"{data}/main", "--audio_root", os.path.join(out, "audio"),
        "--bbx_root", os.path.join(out, "bbx"), "--word_root", f"{data}/main", "--avhubert_path", expert,
        "--checkpoint_dir", ckpts, "--generator_preset", "cpu", "--batch_size", 1, "--num_worker", 0,
        "--windows_per_clip", 1, "--valid_clips", 1, "--stage_min_steps", "4,4,4", "--stage_max_steps", "4,4,4",
        "--ckpt_interval", 12, "--seed", 5, "--device", "cpu", "--no_tensorboard", "--no_progress")
    expert_state = torch.load(expert, map_location="cpu", weights_only=False)
    found = {"expert": sha256_tensors(expert_state.get("model", expert_state))}
    for name in sorted(os.listdir(ckpts)):
        path = os.path.join(ckpts, name)
        if name.endswith(".pth"):
            state = torch.load(path, map_location="cpu", weights_only=False)
            found[name] = sha256_tensors(state["state_dict"])
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", required=True, help="folder for the inputs and outputs (made)")
    parser.add_argument("--skip_training", action="store_true", help="only the dubs")
    parser.add_argument("--dub_flags", default="", help="more inf_demo.py flags for the dubs, e.g. '--paste face'")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    result = {"dubs": dubs(args.out_dir, args.dub_flags.split())}
    if not args.skip_training:
        result["training"] = training(args.out_dir)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
