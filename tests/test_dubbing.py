"""The one-pass dubbing pipeline on real-video situations: cheap detection, cutaways, two faces,
and the folded generator."""
import copy
import os
import threading
import time

import cv2
import numpy as np
import pytest
import skimage.data
import soundfile
import torch

from face_detection import CascadeDetector
from face_detection.tracking import KeyFrameDetector, TrackingOptions, track_faces
from models.presets import talklip_preset
from dubbing import SynthesisOptions, dub
from models.talklip import ConvBlock, TalkLip, prepare_for_inference
from utils.audio import AUDIO_RATE_HZ, load_audio
from utils.video import VideoReader, VideoWriter, probe_video


def astronaut_head(width: int, height: int) -> np.ndarray:
    """The astronaut's head and shoulders (a real photographed face), resized."""
    photo = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    return cv2.resize(photo[0:300, 100:360], (width, height))


def moving_face_720p(count: int):
    """A 1280x720 clip of a head drifting right and bobbing (a talking head), and its offsets."""
    head = astronaut_head(520, 600)
    frames, offsets = [], []
    for k in range(count):
        canvas = np.full((720, 1280, 3), 90, np.uint8)
        x, y = 100 + int(round(1.5 * k)), 60 + int(round(10 * np.sin(k / 20)))
        canvas[y:y + 600, x:x + 520] = head
        frames.append(canvas)
        offsets.append((x, y, x, y))
    return frames, np.array(offsets)


def boxes_of(frames, opts, detector=None):
    detect = KeyFrameDetector(detector or CascadeDetector(), opts.detect_max_side)
    boxes = [box for _, box in track_faces(iter(frames), detect, opts, fps=25)]
    assert all(box is not None for box in boxes)
    return np.stack(boxes), detect.calls


def test_default_detection_matches_every_frame_full_resolution_detection():
    frames, offsets = moving_face_720p(60)
    default = TrackingOptions(smooth_window=5)
    original = TrackingOptions(detect_every=1, detect_max_side=0, smooth_window=5)
    ours, calls = boxes_of(frames, default)
    reference, reference_calls = boxes_of(frames, original)
    assert reference_calls == 60 and calls <= 60 // default.detect_every + 2
    assert np.abs(ours - reference).mean() < 2.0
    # against the true motion (the detector's constant offset from the head removed), the key-frame
    # boxes are about as good as detecting every frame
    def error(boxes):
        relative = boxes - offsets
        return np.abs(relative - relative.mean(axis=0)).mean()
    assert error(ours) < error(reference) + 1.0


def test_key_frames_spread_while_the_face_moves_smoothly_and_not_when_it_turns_back():
    """Smooth drift: key frames stretch to 4x detect_every apart. A head that swings out and back
    between two key frames (both ends agree) fails the motion check, is bisected, and its boxes
    follow the swing; a cut from a large face to a small one (too small at the large face's detection
    scale) is detected again at the search scale and lands on the exact frame."""
    head, small = astronaut_head(520, 600), astronaut_head(400, 460)
    def clip(xs, small_from=None):
        frames = []
        for k, x in enumerate(xs):
            canvas = np.full((720, 1280, 3), 90, np.uint8)
            if small_from is not None and k >= small_from:
                canvas[100:560, 760:1160] = small
            else:
                canvas[60:660, x:x + 520] = head
            frames.append(canvas)
        return frames
    drift = [100 + k for k in range(128)]
    swing = [100 + int(round(120 * np.sin(np.pi * k / 64))) if 16 <= k <= 80 else 100 for k in range(128)]
    for xs in (drift, swing):
        ours, calls = boxes_of(clip(xs), TrackingOptions(smooth_window=1))
        fixed, fixed_calls = boxes_of(clip(xs), TrackingOptions(smooth_window=1, stretch=False))
        truth = np.array(xs)
        err = np.abs((ours[:, 0] - truth) - np.median(ours[:, 0] - truth))
        if xs is drift:
            assert calls < 0.6 * fixed_calls, (calls, fixed_calls)
        assert err.max() <= 6, (err.max(), int(err.argmax()))
    frames = clip(drift[:72], small_from=41)
    boxes, _ = boxes_of(frames, TrackingOptions(smooth_window=1, max_gap_s=0))
    assert boxes[40][0] < 700 and boxes[41][0] >= 800, (boxes[40], boxes[41])
    assert all(b[0] >= 800 for b in boxes[41:])


def test_the_heap_is_trimmed_before_a_detection_larger_than_the_last(monkeypatch):
    """The follower's detector trims the heap before a search at the full view in mid-dub (its
    activations would come on top of the heap grown since the last trim), not before the face-scale
    key frames, and finds what the detector finds."""
    import dubbing.follower as follower
    trims = []
    monkeypatch.setattr(follower, "release_free_memory", lambda: trims.append(1) or True)
    cascade = CascadeDetector()
    frame = moving_face_720p(1)[0][0]
    view, small = cv2.resize(frame, (640, 360)), cv2.resize(frame, (415, 233))
    detector = follower.HeapTrimmedDetector(cascade)
    counts = []
    for image in (view, small, small, view, small):
        found = detector.detect_faces(image[None])
        assert [np.array_equal(a, b) for a, b in zip(found, cascade.detect_faces(image[None]))] == [True]
        counts.append(len(trims))
    assert counts == [0, 0, 0, 1, 1]


def write_clip(path, frames, fps=25):
    with VideoWriter(path, fps, frames[0].shape[1], frames[0].shape[0]) as writer:
        for frame in frames:
            writer.write(frame)


def tone(path, seconds):
    t = np.arange(int(seconds * AUDIO_RATE_HZ)) / AUDIO_RATE_HZ
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)), AUDIO_RATE_HZ)


@pytest.fixture(scope="module")
def cpu_generator():
    torch.manual_seed(0)
    from models.presets import encoder_preset
    return TalkLip(encoder_preset("tiny"), talklip_preset("cpu")).eval()


def test_a_cutaway_passes_through_untouched_and_the_rest_is_dubbed(tmp_path, cpu_generator):
    head = astronaut_head(260, 300)
    face = np.full((360, 480, 3), 90, np.uint8)
    face[30:330, 110:370] = head
    cutaway = np.zeros_like(face)
    cutaway[:] = (40, 120, 200)
    cv2.putText(cutaway, "cutaway", (100, 180), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    frames = [face] * 20 + [cutaway] * 25 + [face] * 20         # 1 s without a face in the middle
    video, audio, out = str(tmp_path / "in.mp4"), str(tmp_path / "a.wav"), str(tmp_path / "out.mp4")
    write_clip(video, frames)
    tone(audio, 65 / 25)
    info = dub(cpu_generator, video, audio, out, CascadeDetector(), SynthesisOptions(progress=False))
    assert info.frames == probe_video(out).num_frames == 65
    assert info.frames_with_face == 40
    assert abs(len(load_audio(out)) / AUDIO_RATE_HZ - 65 / 25) <= 1 / 25 + 0.03
    source = np.stack(list(VideoReader(video)))
    write_clip(str(tmp_path / "again.mp4"), list(source))          # the same frames, encoded once more
    again = np.stack(list(VideoReader(str(tmp_path / "again.mp4")))).astype(int)
    dubbed = np.stack(list(VideoReader(out))).astype(int)
    assert np.abs(dubbed - again)[20:45].mean(axis=(1, 2, 3)).max() < 0.5   # untouched, up to the encoder
    x1, y1, x2, y2 = CascadeDetector().detect_faces(face[None])[0][0][:4].astype(int)
    mouth = (slice(y1 + (y2 - y1) * 6 // 10, y2), slice(x1 + (x2 - x1) // 4, x2 - (x2 - x1) // 4))  # pasted
    mouth_change = np.abs(dubbed[:, mouth[0], mouth[1]] - again[:, mouth[0], mouth[1]]).mean(axis=(1, 2, 3))
    assert mouth_change[:20].min() > 2 and mouth_change[45:].min() > 2   # a generated face was pasted


def test_a_small_face_in_a_4k_frame_is_dubbed_without_s3fd(tmp_path, cpu_generator):
    """A 100-px face in a 3840x2160 frame (17 px in the 640-px view the tracker detects on) was not found by the
    fallback cascade: the dub refused the clip as faceless. Now every frame's mouth is dubbed."""
    background = cv2.resize(np.ascontiguousarray(skimage.data.coffee()[..., ::-1]), (3840, 2160))
    head = astronaut_head(112, 129)              # the face inside is ~100 px wide
    frame = background.copy()
    frame[1500:1629, 1200:1312] = head
    video, audio, out = str(tmp_path / "in.mp4"), str(tmp_path / "a.wav"), str(tmp_path / "out.mp4")
    write_clip(video, [frame] * 6)
    tone(audio, 6 / 25)
    info = dub(cpu_generator, video, audio, out, CascadeDetector(), SynthesisOptions(progress=False))
    assert info.frames == probe_video(out).num_frames == 6 and info.frames_with_face == 6
    source = np.stack(list(VideoReader(video))).astype(int)
    dubbed = np.stack(list(VideoReader(out))).astype(int)
    mouth = (slice(1500 + 58, 1500 + 80), slice(1200 + 38, 1200 + 68))    # the astronaut's mouth in the tile
    face_change = np.abs(dubbed[:, mouth[0], mouth[1]] - source[:, mouth[0], mouth[1]]).mean()
    rest_change = np.abs(dubbed[:, :1400, :] - source[:, :1400, :]).mean()      # the encoder's alone
    assert face_change > 3 * rest_change, (face_change, rest_change)             # a mouth was pasted there


def test_with_two_faces_the_followed_one_never_switches(tmp_path, cpu_generator):
    frames = []
    big, small = astronaut_head(260, 300), astronaut_head(200, 230)
    for k in range(40):
        canvas = np.full((360, 720, 3), 90, np.uint8)
        canvas[30:330, 40 + k:300 + k] = big
        canvas[60:290, 480 - k:680 - k] = small
        frames.append(canvas)
    opts = TrackingOptions(detect_every=8, smooth_window=5, follow=(580, 175))
    detect = KeyFrameDetector(CascadeDetector(), opts.detect_max_side)
    boxes = [box for _, box in track_faces(iter(frames), detect, opts, fps=25)]
    assert all(box is not None for box in boxes)
    def inside(box, x1, x2):
        return x1 < (box[0] + box[2]) / 2 < x2

    assert all(inside(box, 480 - k, 680 - k) for k, box in enumerate(boxes))
    # the default follows the largest face, through the whole clip
    boxes = [box for _, box in track_faces(iter(frames), CascadeDetector(), TrackingOptions(), fps=25)]
    assert all(box is not None and inside(box, 40 + k, 300 + k) for k, box in enumerate(boxes))


def test_folded_generator_matches_the_unfolded_one():
    torch.manual_seed(0)
    from models.presets import encoder_preset
    model = TalkLip(encoder_preset("tiny"), talklip_preset("cpu"))
    for module in model.modules():                   # trained-looking statistics, not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    folded = prepare_for_inference(copy.deepcopy(model))
    assert all(isinstance(m.conv_block[1], torch.nn.Identity) for m in folded.modules() if isinstance(m, ConvBlock))
    faces = torch.rand(4, 6, 96, 96)
    emb = torch.randn(4, model.audio_dim)
    with torch.inference_mode():
        reference = model.double().render(faces.double(), emb.double())
        ours = folded.render(faces.contiguous(memory_format=torch.channels_last), emb)
    assert (ours.double() - reference).abs().max().item() < 1e-4


def test_a_video_without_any_face_is_one_error_and_writes_nothing(tmp_path, cpu_generator):
    from utils.errors import NoFaceError
    video, audio, out = str(tmp_path / "wall.mp4"), str(tmp_path / "a.wav"), str(tmp_path / "out.mp4")
    write_clip(video, [np.full((120, 160, 3), 128, np.uint8)] * 10)
    tone(audio, 0.4)
    rendered = []
    generator = copy.deepcopy(cpu_generator)
    generator.render = lambda *a: rendered.append(1)       # counts calls; never reached
    encode = generator.encode_audio
    generator.encode_audio = lambda *a: (time.sleep(0.5), encode(*a))[1]   # still encoding when the search ends
    with pytest.raises(NoFaceError, match="wall.mp4"):
        dub(generator, video, audio, out, CascadeDetector(), SynthesisOptions(progress=False))
    assert set(os.listdir(tmp_path)) == {"wall.mp4", "a.wav"} and not rendered
    # the speech's first window, encoded beside the face search, is not left running (a daemon thread inside
    # torch when the interpreter exits aborts the process)
    assert not [thread for thread in threading.enumerate() if thread.name == "first audio window"]


def test_the_streaming_dub_equals_a_plain_frame_by_frame_dub(tmp_path, cpu_generator):
    """dub() (track, then decode again by index in chunks, generate, paste, encode, in threads) writes
    the frames a plain computation gives: every source frame decoded into a list, boxes tracked, the
    output frame k taken from source frame ping_pong(k), its face generated from its own crop and the
    speech's row for its time, pasted, then encoded. A cut to a faceless shot, and speech longer than
    the video (played back and forth), with chunks that do not divide the clip."""
    from face_detection.boxes import crop_face
    from dubbing.render import face_inputs, paste_faces, render_faces
    from dubbing.speech import encode_audio
    from utils.timeline import frame_feature_rows, ping_pong
    from utils.audio import talklip_features
    head = astronaut_head(260, 300)
    frames = []
    for k in range(30):
        frame = np.full((360, 480, 3), 90, np.uint8)
        if not 12 <= k < 20:                                  # no face on frames 12-19 (0.32 s: passes through)
            frame[30:330, 100 + k:360 + k] = head
        cv2.putText(frame, str(k), (5, 350), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
        frames.append(frame)
    video, audio = str(tmp_path / "in.mp4"), str(tmp_path / "a.wav")
    write_clip(video, frames)
    tone(audio, 2.3)                                           # 58 frames: forward, backward, forward
    opts = SynthesisOptions(progress=False, chunk_frames=7, batch_size=5)
    info = dub(cpu_generator, video, audio, str(tmp_path / "dub.mp4"), CascadeDetector(), opts)

    source = list(VideoReader(video))
    tracking = TrackingOptions()
    boxes = [box for _, box in track_faces(iter(source), CascadeDetector(), tracking, fps=25)]
    emb = encode_audio(cpu_generator, talklip_features(load_audio(audio), AUDIO_RATE_HZ), "cpu")
    count = round(2.3 * 25)
    rows, order = frame_feature_rows(count, 25, len(emb)), ping_pong(count, len(source))
    with VideoWriter(str(tmp_path / "plain.mp4"), 25, 480, 360, audio_path=audio) as writer:
        for k in range(count):
            frame, box = source[order[k]].copy(), boxes[order[k]]
            if box is not None:
                crop = crop_face(frame, box, 96)[None]
                face = render_faces(cpu_generator, face_inputs(crop, crop), emb[rows[k]][None], "cpu")
                paste_faces(frame[None], box[None], face, in_place=True, region=opts.region)
            writer.write(frame)
    plain = np.stack(list(VideoReader(str(tmp_path / "plain.mp4"))))
    dubbed = np.stack(list(VideoReader(str(tmp_path / "dub.mp4"))))
    assert info.frames == count == len(dubbed) and info.frames_with_face == sum(boxes[i] is not None for i in order)
    assert 0 < info.frames_with_face < count and info.with_face.sum() == info.frames_with_face
    assert 0 < info.detection_misses < info.detected_frames       # key frames inside the faceless shot
    assert np.array_equal(dubbed, plain)


def test_dub_reports_its_progress_stage_by_stage(tmp_path, cpu_generator):
    """SynthesisOptions.on_progress hears (stage, frames done, frames in all) from the pipeline itself:
    detecting faces while it looks for the first frame with the face (the first 10 have none), then
    generating over the output's frames (the face is followed alongside), then encoding."""
    video, audio = str(tmp_path / "in.mp4"), str(tmp_path / "a.wav")
    face = np.full((240, 320, 3), 90, np.uint8)
    face[10:230, 60:250] = astronaut_head(190, 220)
    write_clip(video, [np.full((240, 320, 3), 90, np.uint8)] * 10 + [face] * 10)
    tone(audio, 2.0)                                           # 50 output frames from 20 source frames
    heard = []
    opts = SynthesisOptions(progress=False, chunk_frames=8, on_progress=lambda *event: heard.append(event))
    info = dub(cpu_generator, video, audio, str(tmp_path / "out.mp4"), CascadeDetector(), opts)
    stages = [stage for stage, _, _ in heard]
    assert stages == sorted(stages, key=["detecting faces", "generating", "encoding"].index)
    detecting = [d for s, d, t in heard if s == "detecting faces" and t == 20]
    assert detecting == sorted(detecting) and detecting[0] == 0 and 10 < detecting[-1] <= 20, detecting
    generating = [d for s, d, t in heard if s == "generating" and t == 50]
    assert generating == sorted(generating) and generating[0] == 0 and generating[-1] == 50 and len(generating) > 2
    assert heard[-1] == ("encoding", 50, 50)
    assert 0 < info.first_frame_s < sum(info.seconds.values()) + 60


def test_auto_precision_is_bf16_only_where_the_hardware_computes_it(tmp_path, talklip_checkpoint, monkeypatch):
    """--precision auto: bf16 on a CPU with AVX512-BF16 or AMX, fp32 on one without (emulated bf16 is slower
    than fp32); fp32 and bf16 are what they say; fp16 without a GPU is one usage line, nothing written."""
    import utils.device as device
    from tests.conftest import run_module
    cpu = torch.device("cpu")
    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(device, "has_native_bf16", lambda _device, native=native: native)
        assert device.autocast_dtype("auto", cpu) is expected
        assert device.autocast_dtype("fp32", cpu) is None and device.autocast_dtype("bf16", cpu) is torch.bfloat16
    path, _ = talklip_checkpoint
    tone(str(tmp_path / "a.wav"), 0.4)
    cv2.imwrite(str(tmp_path / "face.png"), astronaut_head(260, 300))
    proc = run_module("inf_demo", "--video_path", tmp_path / "face.png", "--wav_path", tmp_path / "a.wav",
                      "--ckpt_path", path, "--save_path", tmp_path / "out", "--device", "cpu", "--precision", "fp16")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --precision fp16 needs a GPU")
    assert not os.path.exists(tmp_path / "out.mp4")


def test_a_bf16_dub_stays_within_40_db_of_the_fp32_dub(tmp_path, cpu_generator):
    """The generator under bf16 autocast (what --precision auto picks on CPUs with native bf16; emulated
    elsewhere, same numbers): the dubbed face region is within PSNR >= 40 dB of the fp32 dub's, and the
    frames away from the face the same, up to the encoder."""
    frames = []
    for k in range(12):
        frame = np.full((240, 320, 3), 90, np.uint8)
        frame[20:220, 90 + k:250 + k] = astronaut_head(160, 200)
        frames.append(frame)
    write_clip(str(tmp_path / "clip.mp4"), frames)
    tone(str(tmp_path / "speech.wav"), 0.48)
    dubs = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        dub(cpu_generator, str(tmp_path / "clip.mp4"), str(tmp_path / "speech.wav"), str(tmp_path / f"{name}.mp4"),
            CascadeDetector(), SynthesisOptions(progress=False, dtype=dtype))
        dubs[name] = np.stack(list(VideoReader(str(tmp_path / f"{name}.mp4")))).astype(np.float64)
    face = (slice(20, 220), slice(90, 262))
    mse = np.mean((dubs["fp32"][:, face[0], face[1]] - dubs["bf16"][:, face[0], face[1]]) ** 2)
    assert 10 * np.log10(255 ** 2 / max(mse, 1e-12)) >= 40
    assert np.abs(dubs["fp32"][:, :, :80] - dubs["bf16"][:, :, :80]).mean() < 0.5     # untouched, up to the encoder


def test_fp32_dubs_in_batches_of_4_with_the_faces_of_batches_of_8():
    """SynthesisOptions' batch follows the precision: 4 faces in fp32 on the CPU (nearly as fast, ~100 MB less at
    a 720p dub's peak), 8 under bf16 or fp16 or on a GPU, a given batch kept; the paper's folded generator in
    fp32 pastes the same frames, bit for bit, at 4 as at 8 (the dub's frames did not change with the default)."""
    from dubbing.render import render_into
    from tests.conftest import Collect
    from utils.pipeline import StageClock
    assert SynthesisOptions().batch_size == 4 and SynthesisOptions(dtype=torch.bfloat16).batch_size == 8
    assert SynthesisOptions(dtype=torch.float16, device="cuda").batch_size == 8
    assert SynthesisOptions(device="cuda").batch_size == 8 and SynthesisOptions(batch_size=5).batch_size == 5
    with pytest.raises(ValueError, match="batch_size"):
        SynthesisOptions(batch_size=0)
    torch.manual_seed(0)
    generator = prepare_for_inference(TalkLip().eval())
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (13, 120, 160, 3), np.uint8)
    boxes = [np.array([20 + k, 10, 130 + k, 115]) for k in range(13)]
    emb = torch.randn(13, generator.audio_dim)
    pasted = {}
    for batch in (None, 8):
        written = Collect()
        opts = SynthesisOptions(batch_size=batch, chunk_frames=16, progress=False)
        render_into(written, generator, zip(frames.copy(), boxes, range(13)), emb, opts, StageClock())
        pasted[opts.batch_size] = np.stack(written.frames)
    assert not np.array_equal(pasted[4], frames)
    np.testing.assert_array_equal(pasted[4], pasted[8])


HEAP_HOLES = """
import sys
import numpy as np
sys.path.insert(0, {root!r})
from utils.pipeline import release_free_memory

def rss_mb():
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) / 1024

if sys.argv[1] == "after_dub":                         # a library call must leave the allocator as it was
    import torch
    from face_detection import CascadeDetector
    from models.presets import encoder_preset, talklip_preset
    from dubbing import SynthesisOptions, dub
    from models.talklip import TalkLip
    from utils.video import VideoWriter
    import soundfile
    frame = np.full((120, 160, 3), 90, np.uint8)
    with VideoWriter(sys.argv[2] + "/in.mp4", 25, 160, 120) as writer:
        for _ in range(5):
            writer.write(frame)
    soundfile.write(sys.argv[2] + "/a.wav", np.zeros(3200), 16000)
    generator = TalkLip(encoder_preset("tiny"), talklip_preset("cpu")).eval()
    try:
        dub(generator, sys.argv[2] + "/in.mp4", sys.argv[2] + "/a.wav", sys.argv[2] + "/out.mp4",
            CascadeDetector(), SynthesisOptions(progress=False))
    except Exception as error:                         # no face in a grey frame: refused, as it should be
        assert "no face" in str(error), error
np.ones(1 << 20).sum()                                 # an 8 MB buffer freed: glibc's threshold rises to 8 MB
buffers = [np.ones(size) for size in [{size}] * 150]   # pages touched
before = rss_mb()
del buffers[:-1]                                       # freed below the last one: a hole, unless mapped
if sys.argv[1] == "trim":
    assert release_free_memory()
print({total}, before - rss_mb())
"""


def heap_hole(mode: str, size: int, *extra: str):
    """(MB allocated, MB handed back) for 150 buffers of ``size`` floats of which 149 are freed below
    a live one, in a fresh process."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = HEAP_HOLES.format(root=root, size=size, total=150 * size * 8 / 2 ** 20)
    out = subprocess.run([sys.executable, "-c", code, mode, *extra], capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), float(out[1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_freed_buffers_go_back_to_the_os_during_a_dub():
    # dub() trims the heap after every chunk, so a long clip's RSS does not creep up with holes left by
    # freed buffers. Each case is a fresh process.
    from utils.pipeline import release_free_memory
    if not release_free_memory():
        pytest.skip("the C allocator is not glibc")
    total, kept_hole = heap_hole("plain", 180_000)                  # 1.4 MB buffers, 206 MB
    assert kept_hole < 0.1 * total, kept_hole                       # the baseline: the hole stays resident
    small_total, trimmed = heap_hole("trim", 12_500)                 # 100 kB buffers: trimmed
    assert trimmed > 0.7 * small_total, trimmed


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_dub_leaves_the_process_allocator_as_it_found_it(tmp_path):
    """dub() sets nothing for the process (no allocator setting): after a dub() in a fresh process a
    freed buffer below a live one still stays resident, as without any setting."""
    from utils.pipeline import release_free_memory
    if not release_free_memory():
        pytest.skip("the C allocator is not glibc")
    total, kept_hole = heap_hole("after_dub", 180_000, str(tmp_path))
    assert kept_hole < 0.1 * total, kept_hole


def test_a_face_track_lists_the_frames_that_pass_through():
    from dubbing.follower import FaceTrack
    box = np.array([0, 0, 10, 10])
    track = FaceTrack([None, box, None, None, box, None], np.arange(6), 6, False, 2, 0)
    assert track.frames == 6 and track.passthrough_spans() == [(0, 1), (2, 4), (5, 6)]
    assert FaceTrack([box] * 3, np.arange(3), 3, False, 1, 0).passthrough_spans() == []


def test_speech_encoded_window_by_window_as_frames_ask_equals_the_whole_at_once(tmp_path, cpu_generator):
    """Speech.embeddings (features read by range from the file, windows encoded when first asked,
    the encoder's pages released after each) gives exactly encode_audio's rows on the whole file's
    features, for 20 s of speech in windows of 320 rows."""
    from dubbing.speech import Speech, encode_audio
    from utils.audio import SpeechSamples, talklip_features
    from utils.pipeline import StageClock
    path = str(tmp_path / "speech.wav")
    tone(path, 20.0)
    whole = encode_audio(cpu_generator, talklip_features(load_audio(path), AUDIO_RATE_HZ), "cpu", max_frames=320)
    with SpeechSamples(path, str(tmp_path)) as samples:
        speech = Speech.of_samples(cpu_generator, samples, SynthesisOptions(audio_window=320), StageClock())
        assert speech.rows == len(whole) == 500
        parts = [speech.embeddings(np.arange(start, min(500, start + 37))) for start in range(0, 500, 37)]
    assert torch.equal(torch.cat(parts), whole)


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads mappings from /proc")
def test_mapped_weights_pages_are_handed_back_and_read_again_unchanged(tmp_path):
    """drop_pages on tensors of a mapped checkpoint: their resident pages go (RssFile falls by about
    their size) and their values are the same when read again; a tensor in ordinary memory is left
    as it is (dropping its pages would zero them)."""
    from utils.memory import drop_pages

    def rss_file_mb():
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("RssFile")).split()[1]) / 1024

    torch.manual_seed(0)
    torch.save({"big": torch.randn(32 << 20 >> 2)}, tmp_path / "w.pt")          # 32 MB
    mapped = torch.load(tmp_path / "w.pt", mmap=True, weights_only=True)["big"]
    total = float(mapped.double().sum())                                          # pages read in
    before = rss_file_mb()
    assert drop_pages([mapped]) > 31 << 20
    assert before - rss_file_mb() > 25, (before, rss_file_mb())
    assert float(mapped.double().sum()) == total
    anonymous = torch.randn(8 << 20 >> 2)
    copy_ = anonymous.clone()
    assert drop_pages([anonymous]) == 0 and torch.equal(anonymous, copy_)


def test_bad_speech_or_a_follow_point_off_the_frame_is_refused_before_anything_is_generated(tmp_path, cpu_generator):
    """A --follow point off the frame, and speech with a NaN sample, are refused in one line naming the
    cause, before the generator runs (it would raise if called) and with no output left."""
    from utils.errors import MediaError, TalkLipError
    head = np.full((200, 320, 3), 90, np.uint8)
    head[20:180, 80:240] = astronaut_head(160, 160)
    write_clip(str(tmp_path / "clip.mp4"), [head] * 5)
    tone(str(tmp_path / "speech.wav"), 0.4)
    wav = np.zeros(AUDIO_RATE_HZ // 2, np.float32)
    wav[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", wav, AUDIO_RATE_HZ, subtype="FLOAT")

    class NeverCalled(torch.nn.Module):
        def __getattr__(self, name):
            raise AssertionError(f"the generator was used ({name})")

    out = str(tmp_path / "out.mp4")
    with pytest.raises(TalkLipError, match=r"--follow 400,50 lies outside the 320x200 frame"):
        dub(cpu_generator, str(tmp_path / "clip.mp4"), str(tmp_path / "speech.wav"), out, CascadeDetector(),
            SynthesisOptions(progress=False), TrackingOptions(follow=(400, 50)))
    with pytest.raises(MediaError, match=r"nan.wav has NaN or infinite samples"):
        dub(NeverCalled(), str(tmp_path / "clip.mp4"), str(tmp_path / "nan.wav"), out, CascadeDetector(),
            SynthesisOptions(progress=False))
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "nan.wav", "speech.wav"]


def test_a_still_larger_than_h264_can_carry_is_scaled_down_to_fit(tmp_path, capsys):
    """A 9000 x 9000 PNG was dubbed into an H.264 file beyond level 6.2's frame size (players refuse it),
    holding the full picture: it is now decoded reduced and scaled to fit, saying so. A still that fits is
    read as it is."""
    from dubbing.source import H264_MAX_MACROBLOCKS, h264_fit, open_face_source
    big = np.zeros((9000, 9000, 3), np.uint8)
    big[3000:6000, 3000:6000] = (40, 90, 200)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    source = open_face_source(str(tmp_path / "big.png"))
    assert -(-source.width // 16) * -(-source.height // 16) <= H264_MAX_MACROBLOCKS
    assert source.width > 5000 and source.image.shape == (source.height, source.width, 3)
    assert tuple(source.image[source.height // 2, source.width // 2]) == (40, 90, 200)
    assert "big.png is 9000x9000, larger than an H.264 video can be" in capsys.readouterr().err
    assert h264_fit(8192, 4320) == 1.0 and h264_fit(3840, 2160) == 1.0 and h264_fit(8192, 4368) < 1.0
    cv2.imwrite(str(tmp_path / "small.png"), big[:90, :160])
    assert open_face_source(str(tmp_path / "small.png")).image.shape == (90, 160, 3)
    assert "larger" not in capsys.readouterr().err


def test_a_cover_picture_stored_as_the_first_video_track_is_not_what_gets_dubbed(tmp_path, cpu_generator, capsys):
    """An mp4 or mkv whose first video stream is a one-frame picture (cover art) and whose second is the real,
    default-flagged video: the real one is dubbed (its size, its frames), and the dub says which stream."""
    from utils.ffmpeg import run_ffmpeg
    cv2.imwrite(str(tmp_path / "cover.png"), np.full((320, 320, 3), (0, 0, 255), np.uint8))
    head = np.full((200, 320, 3), 90, np.uint8)
    head[20:180, 80:240] = astronaut_head(160, 160)
    write_clip(str(tmp_path / "real.mp4"), [head] * 12)
    tone(str(tmp_path / "speech.wav"), 0.4)
    for ext in ("mp4", "mkv"):
        both = str(tmp_path / f"both.{ext}")
        run_ffmpeg(["-i", str(tmp_path / "cover.png"), "-i", str(tmp_path / "real.mp4"), "-map", "0:v", "-map", "1:v",
                    "-c:v", "libx264", "-disposition:v:0", "0", "-disposition:v:1", "default", both], source="test")
        out = str(tmp_path / f"out_{ext}.mp4")
        dub(cpu_generator, both, str(tmp_path / "speech.wav"), out, CascadeDetector(), SynthesisOptions(progress=False))
        info = probe_video(out)
        assert (info.width, info.height, info.num_frames) == (320, 200, 10), ext
        assert "video stream 1 (320x200) is dubbed" in capsys.readouterr().err


def decoded_by_ffmpeg(path, filters, size):
    """The first frame of ``path`` as ffmpeg itself decodes it through ``filters`` (BGR uint8)."""
    from utils.ffmpeg import ffmpeg_exe
    import subprocess
    out = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", path, "-frames:v", "1", "-vf", filters,
                          "-f", "rawvideo", "-pix_fmt", "bgr24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(size[1], size[0], 3)


@pytest.mark.parametrize("transfer", ["smpte2084", "arib-std-b67", "bt709"])
def test_hdr_and_bt2020_video_is_dubbed_in_bt709_with_its_colours(tmp_path, cpu_generator, capsys, transfer):
    """HEVC 10-bit with BT.2020 primaries and a PQ, HLG or SDR transfer: the stream is converted to BT.709
    (tone mapped when HDR) before anything decodes it, the dub is tagged BT.709, and the colours away from
    the face are within a few levels of ffmpeg's own conversion of the input, and of the SDR picture the
    HDR clip was made from (SDR white placed at 203 nits: the tone map gives it back). Said once."""
    import av
    from dubbing.source import decodable_stream
    from utils.ffmpeg import run_ffmpeg
    from utils.video import TO_BT709, TONE_MAP
    frame = np.full((200, 320, 3), 90, np.uint8)
    frame[20:180, 100:220] = astronaut_head(120, 160)
    swatches = [(40, 30, 180), (60, 160, 60), (200, 120, 40), (90, 130, 200)]    # BGR: a red suit, green, ...
    for k, colour in enumerate(swatches):
        frame[10 + 45 * k:45 + 45 * k, 10:80] = colour
    cv2.imwrite(str(tmp_path / "sdr.png"), frame)
    clip = str(tmp_path / f"{transfer}.mp4")
    run_ffmpeg(["-loop", "1", "-framerate", "25", "-i", str(tmp_path / "sdr.png"), "-frames:v", "12", "-vf",
                f"setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709,zscale=t=linear:npl=203,"
                f"format=gbrpf32le,zscale=p=bt2020:t={transfer}:"
                "m=bt2020nc:r=tv:npl=203,format=yuv420p10le", "-c:v", "libx265", "-x265-params",
                f"log-level=0:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc", clip], source="test")
    tone(str(tmp_path / "speech.wav"), 0.4)
    out = str(tmp_path / "out.mp4")
    dub(cpu_generator, clip, str(tmp_path / "speech.wav"), out, CascadeDetector(), SynthesisOptions(progress=False))
    said = capsys.readouterr().err
    assert said.count("converted to") == 1
    assert ("HDR" in said) == (transfer != "bt709") and "BT.2020" in said
    with av.open(out) as container:
        codec = container.streams.video[0].codec_context
        assert (codec.color_primaries, codec.color_trc, codec.colorspace) == (1, 1, 1)     # BT.709
    dubbed = next(iter(VideoReader(out)))
    reference = decoded_by_ffmpeg(clip, TONE_MAP if transfer != "bt709" else TO_BT709, (320, 200))
    made_from = frame.astype(float)
    errors = []
    for k in range(len(swatches)):
        patch = (slice(18 + 45 * k, 37 + 45 * k), slice(18, 72))
        ours, ffmpegs, sdr = (image[patch].reshape(-1, 3).mean(0) for image in (dubbed, reference, made_from))
        errors.append(np.abs(ours - ffmpegs))
        assert np.abs(ours - ffmpegs).max() <= 6, (swatches[k], ours, ffmpegs)     # H.264 at crf 18: 2-5
        # not washed out (PQ decoded as if SDR is 40-60 levels off); the clip's own 10-bit encode moves up to 13
        assert np.abs(ours - sdr).max() <= 15, (swatches[k], ours, sdr)
    assert np.mean(errors) <= 3
    write_clip(str(tmp_path / "sdr.mp4"), [frame] * 2)
    assert decodable_stream(str(tmp_path / "sdr.mp4"), str(tmp_path)) == str(tmp_path / "sdr.mp4")
    assert capsys.readouterr().err == ""


def test_a_written_video_is_tagged_bt709_and_decodes_to_its_colours(tmp_path):
    """VideoWriter encodes with BT.709's matrix and says so in the stream: ffmpeg and OpenCV, which both
    honour the tags, decode the colours written (within H.264's loss at crf 18: 2-4 levels on flat colour)."""
    import av
    frame = np.zeros((64, 128, 3), np.uint8)
    for k, colour in enumerate([(40, 30, 180), (60, 160, 60), (200, 120, 40), (250, 250, 250)]):
        frame[:, 32 * k:32 * k + 32] = colour
    write_clip(str(tmp_path / "c.mp4"), [frame] * 3)
    with av.open(str(tmp_path / "c.mp4")) as container:
        codec = container.streams.video[0].codec_context
        assert (codec.color_primaries, codec.color_trc, codec.colorspace, codec.color_range) == (1, 1, 1, 1)
    by_ffmpeg = decoded_by_ffmpeg(str(tmp_path / "c.mp4"), "null", (128, 64))
    by_opencv = next(iter(VideoReader(str(tmp_path / "c.mp4"))))
    for decoded in (by_ffmpeg, by_opencv):
        assert np.abs(decoded[8:56, 4::32][:, :4].astype(int) - frame[8:56, 4::32][:, :4]).max() <= 4   # crf 18


def test_a_written_photo_keeps_what_h264_can_keep(tmp_path):
    """VideoWriter converts RGB to YCbCr with swscale's exactly rounded path: a smooth photo (the astronaut,
    256 px, blurred so that H.264 at crf 18 keeps nearly everything) comes back at >= 37.3 dB. swscale's
    default fast path lost ~1.1 dB of it here (36.7 dB; 39.7 against 42.3 dB on bench.paste's 720p face),
    the ceiling of every dub's untouched pixels."""
    frame = cv2.GaussianBlur(cv2.resize(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR), (256, 256),
                                        interpolation=cv2.INTER_AREA), (0, 0), 2)
    write_clip(str(tmp_path / "photo.mp4"), [frame] * 3)
    decoded = next(iter(VideoReader(str(tmp_path / "photo.mp4")))).astype(np.float64)
    psnr = 10 * np.log10(255.0 ** 2 / np.mean((decoded - frame) ** 2))
    assert psnr >= 37.3, psnr


def test_the_mouth_paste_changes_only_the_mouth_region_and_the_face_paste_the_whole_box():
    """paste_faces with a MouthRegion: every pixel outside the region (above its top, beside it, outside the
    box) is the source's, exactly; inside, the generated face and the frame are mixed by mouth_mask's
    weight, full weight deep inside. Without a region the whole box is the resized face (the original's
    paste, which --paste face keeps)."""
    from dubbing.options import MouthRegion
    from dubbing.render import mouth_mask, paste_faces
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 200, 300, 3), dtype=np.uint8)
    faces = rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    boxes = np.array([[50, 20, 170, 180], [-30, 100, 90, 260]])       # the second leaves the frame
    region = MouthRegion(top=0.5, side=0.1, feather=0.1)
    out = paste_faces(frames, boxes, faces, region=region)
    for frame, pasted, box, face in zip(frames, out, boxes, faces):
        x1, y1, x2, y2 = box
        weight = mouth_mask(y2 - y1, x2 - x1, region)[..., 0]
        full = np.zeros(frame.shape[:2], np.float32)
        big = cv2.resize(face, (x2 - x1, y2 - y1), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        canvas = frame.astype(np.float32).copy()
        fy1, fx1, fy2, fx2 = max(0, y1), max(0, x1), min(200, y2), min(300, x2)
        full[fy1:fy2, fx1:fx2] = weight[fy1 - y1:fy2 - y1, fx1 - x1:fx2 - x1]
        canvas[fy1:fy2, fx1:fx2] = big[fy1 - y1:fy2 - y1, fx1 - x1:fx2 - x1]
        outside = full == 0
        assert np.array_equal(pasted[outside], frame[outside])
        expected = np.round(full[..., None] * canvas + (1 - full[..., None]) * frame.astype(np.float32))
        assert np.abs(pasted[~outside].astype(float) - expected[~outside]).max() <= 0.5
        assert (full[:max(0, y1 + (y2 - y1) // 2)] == 0).all()           # the upper half of the box is never touched
        assert full.max() == 1.0
    whole = paste_faces(frames[:1], boxes[:1], faces[:1])
    x1, y1, x2, y2 = boxes[0]
    assert np.array_equal(whole[0, y1:y2, x1:x2], cv2.resize(faces[0], (x2 - x1, y2 - y1),
                                                            interpolation=cv2.INTER_LINEAR))
    outside = np.ones((200, 300), bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(whole[0][outside], frames[0][outside])


def test_a_dub_pastes_the_mouth_by_default_and_the_test_protocol_the_face(tmp_path, cpu_generator):
    """The default dub leaves the upper half of the face box as the source's (before encoding: a writer
    that keeps the frames); --paste face replaces it."""
    from dubbing.render import render_into
    from dubbing.speech import encode_audio
    from utils.pipeline import StageClock
    from utils.audio import talklip_features

    class Keep:
        def __init__(self):
            self.frames = []

        def write_batch(self, frames):
            self.frames += [f.copy() for f in frames]
    frame = np.full((200, 320, 3), 90, np.uint8)
    frame[20:180, 80:240] = astronaut_head(160, 160)
    box = np.array([80, 20, 240, 180])
    tone(str(tmp_path / "s.wav"), 0.2)
    emb = encode_audio(cpu_generator, talklip_features(load_audio(str(tmp_path / "s.wav")), AUDIO_RATE_HZ), "cpu")
    kept = {}
    for paste in ("mouth", "face"):
        keep = Keep()
        render_into(keep, cpu_generator, [(frame.copy(), box, 0)], emb, SynthesisOptions(progress=False, paste=paste),
                    StageClock())
        kept[paste] = keep.frames[0]
    assert np.array_equal(kept["mouth"][:100], frame[:100])            # rows above the box's middle
    assert not np.array_equal(kept["face"][20:100, 80:240], frame[20:100, 80:240])
    with pytest.raises(ValueError, match="paste must be one of"):
        SynthesisOptions(paste="eyes")


def test_each_reference_choice_picks_the_frame_it_says(tmp_path, cpu_generator):
    """--reference: own (none: each frame its own), first (the first frame with the face), closed (the frame
    whose mouth is least open: a dark mouth drawn on every face frame, its opening shrinking to nothing at
    frame 10 and growing again), N (that frame). A frame without the face, or past the end, is refused in
    one line, and nothing is written."""
    from utils.errors import TalkLipError
    head = np.full((240, 320, 3), 90, np.uint8)
    head[20:220, 90:250] = astronaut_head(160, 200)
    x1, y1, x2, y2 = CascadeDetector().detect_faces(head[None])[0][0][:4]
    centre = (int((x1 + x2) / 2), int(y1 + 0.75 * (y2 - y1)))
    frames = []
    for k in range(16):
        frame = np.full((240, 320, 3), 90, np.uint8) if k < 3 else head.copy()     # no face on frames 0-2
        if k >= 3 and k != 10:
            cv2.ellipse(frame, centre, (int(0.15 * (x2 - x1)), 1 + abs(k - 10)), 0, 0, 360, (20, 20, 30), -1)
        frames.append(frame)
    write_clip(str(tmp_path / "clip.mp4"), frames)
    tone(str(tmp_path / "speech.wav"), 0.64)
    found = {}
    for spec in ("own", "first", "closed", "7"):
        info = dub(cpu_generator, str(tmp_path / "clip.mp4"), str(tmp_path / "speech.wav"), str(tmp_path / f"{spec}.mp4"),
                   CascadeDetector(), SynthesisOptions(progress=False, reference=spec, chunk_frames=4),
                   TrackingOptions(max_gap_s=0.0))
        found[spec] = info.reference_frame
    assert found == {"own": None, "first": 3, "closed": 10, "7": 7}
    own, first = (np.stack(list(VideoReader(str(tmp_path / f"{spec}.mp4")))) for spec in ("own", "first"))
    assert not np.array_equal(own[4:], first[4:])                   # the generator saw another reference
    for spec, says in (("1", "no face was found on frame 1"), ("40", "has 16 frames")):
        with pytest.raises(TalkLipError, match=says):
            dub(cpu_generator, str(tmp_path / "clip.mp4"), str(tmp_path / "speech.wav"), str(tmp_path / "x.mp4"),
                CascadeDetector(), SynthesisOptions(progress=False, reference=spec), TrackingOptions(max_gap_s=0.0))
    assert not os.path.exists(tmp_path / "x.mp4")


def test_a_jobs_file_dubs_its_good_rows_skips_the_done_one_and_lists_the_bad_one(tmp_path, talklip_checkpoint):
    """inf_demo.py --jobs: one process, a CSV with a row already done (its output untouched), a bad row
    (a missing video) and two good rows (one with a follow point and a reference): exit 3, the two
    outputs written, the failures file naming the bad row; a rerun skips what is done. Shards of a
    JSON-lines file split the rows without overlap and cover them all."""
    import json
    import shutil
    from tests.conftest import run_module
    from tests.media import head_frames
    write_clip(str(tmp_path / "face.mp4"), head_frames(20))
    tone(str(tmp_path / "speech.wav"), 0.6)
    path, _ = talklip_checkpoint
    first = run_module("inf_demo", "--video_path", tmp_path / "face.mp4", "--wav_path", tmp_path / "speech.wav",
                       "--ckpt_path", path, "--save_path", tmp_path / "done.mp4", "--device", "cpu", "--no_progress")
    assert first.returncode == 0, first.stderr
    stamp = os.path.getmtime(tmp_path / "done.mp4")
    (tmp_path / "jobs.csv").write_text("video,speech,output,follow,reference\n"
                                       "face.mp4,speech.wav,done.mp4,,\n"
                                       "missing.mp4,speech.wav,out/bad.mp4,,\n"
                                       "face.mp4,speech.wav,out/a.mp4,,\n"
                                       "face.mp4,speech.wav,out/b.mp4,\"80,80\",first\n")
    proc = run_module("inf_demo", "--jobs", tmp_path / "jobs.csv", "--ckpt_path", path, "--device", "cpu",
                      "--no_progress", cwd=str(tmp_path.parent))
    assert proc.returncode == 3, proc.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["a.mp4", "b.mp4"]
    assert os.path.getmtime(tmp_path / "done.mp4") == stamp
    failures = (tmp_path / "jobs.failures_1of1.txt").read_text().splitlines()
    assert len(failures) == 1 and failures[0].startswith("row 2\t") and "missing.mp4 does not exist" in failures[0]
    assert "dubbed 2 jobs" in proc.stderr and "1 already done, 1 failed" in proc.stderr
    for name in ("a", "b"):
        assert probe_video(str(tmp_path / "out" / f"{name}.mp4")).num_frames == 15
    again = run_module("inf_demo", "--jobs", tmp_path / "jobs.csv", "--ckpt_path", path, "--device", "cpu",
                       "--no_progress")
    assert again.returncode == 3 and "dubbed 0 jobs" in again.stderr and "3 already done" in again.stderr
    shutil.rmtree(tmp_path / "out")
    rows = [{"video": "face.mp4", "speech": "speech.wav", "output": f"out/{k}.mp4"} for k in range(5)]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    written = []
    for rank in (1, 2):
        before = set(os.listdir(tmp_path / "out")) if (tmp_path / "out").exists() else set()
        proc = run_module("inf_demo", "--jobs", tmp_path / "jobs.jsonl", "--ckpt_path", path, "--device", "cpu",
                          "--no_progress", "--rank", rank, "--nshard", 2)
        assert proc.returncode == 0, proc.stderr
        written.append(set(os.listdir(tmp_path / "out")) - before)
    assert written[0] and written[1] and not written[0] & written[1]
    assert written[0] | written[1] == {f"{k}.mp4" for k in range(5)}
    (tmp_path / "broken.csv").write_text("video,speech\nface.mp4,speech.wav\n")
    proc = run_module("inf_demo", "--jobs", tmp_path / "broken.csv", "--ckpt_path", path, "--device", "cpu")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        "broken.csv row 1 lacks output: every row needs video, speech, output (and may give follow, reference)")


def test_bf16_weights_stored_once_give_autocast_s_output_bit_for_bit(cpu_generator):
    """prepare_for_inference(model, bf16) stores the face networks in bf16 (half their memory, no cast at
    every batch): the same faces as autocast over the fp32 weights, bit for bit; the audio encoder stays
    fp32; render_faces runs such a generator under bf16 even when no dtype is asked."""
    import copy
    from dubbing.render import render_faces
    from models.talklip import prepare_for_inference
    torch.manual_seed(0)
    inputs, emb = torch.rand(3, 6, 96, 96), torch.randn(3, cpu_generator.audio_dim)
    fp32 = prepare_for_inference(copy.deepcopy(cpu_generator))
    bf16 = prepare_for_inference(copy.deepcopy(cpu_generator), torch.bfloat16)
    assert bf16.face_encoder_blocks[0][0].conv_block[0].weight.dtype is torch.bfloat16
    assert all(p.dtype is torch.float32 for p in bf16.audio_encoder.parameters())
    expected = render_faces(fp32, inputs, emb, "cpu", dtype=torch.bfloat16)
    assert np.array_equal(render_faces(bf16, inputs, emb, "cpu", dtype=torch.bfloat16), expected)
    assert np.array_equal(render_faces(bf16, inputs, emb, "cpu"), expected)


def test_jobs_rows_that_would_clobber_each_other_are_refused_before_any_runs(tmp_path, talklip_checkpoint):
    """A row whose output is another row's input (the speech of other rows) would overwrite it, and two rows
    with one output would make the second 'already done': both refused in one line naming the rows, before
    any row is dubbed; an output without .mp4 gets it, as --save_path does."""
    from dubbing.jobs import read_jobs
    from tests.conftest import run_module
    from tests.media import head_frames
    write_clip(str(tmp_path / "face.mp4"), head_frames(20))
    tone(str(tmp_path / "s0.wav"), 0.6)
    (tmp_path / "clobber.csv").write_text("video,speech,output\nface.mp4,s0.wav,out/a.mp4\nface.mp4,s0.wav,out/b.mp4\n"
                                          "face.mp4,s0.wav,s0.wav.mp4\nface.mp4,s0.wav,face.mp4\n")
    path, _ = talklip_checkpoint
    proc = run_module("inf_demo", "--jobs", tmp_path / "clobber.csv", "--ckpt_path", path, "--device", "cpu")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "row 4's output" in line and "face.mp4 is an input of rows 1, 2, 3, 4:" in line
    assert not (tmp_path / "out").exists() and os.path.getsize(tmp_path / "s0.wav") > 1000
    (tmp_path / "twice.csv").write_text("video,speech,output\nface.mp4,s0.wav,out/a\nface.mp4,s0.wav,out/b.mp4\n"
                                        "face.mp4,s0.wav,out/a.mp4\n")
    proc = run_module("inf_demo", "--jobs", tmp_path / "twice.csv", "--ckpt_path", path, "--device", "cpu")
    assert proc.returncode == 2 and "rows 1, 3 all write" in proc.stderr and "a.mp4" in proc.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "speech.csv").write_text("video,speech,output\nface.mp4,s0.wav,s0\n")
    assert read_jobs(str(tmp_path / "speech.csv"))[0].output == str(tmp_path / "s0.mp4")


def test_a_stopped_jobs_run_lists_the_rows_that_failed_so_far(tmp_path, talklip_checkpoint):
    """SIGTERM during --jobs: the failures file names the row that failed before the stop."""
    import signal
    import subprocess
    import sys
    import time
    from tests.conftest import ROOT
    from tests.media import head_frames
    write_clip(str(tmp_path / "face.mp4"), head_frames(20))
    tone(str(tmp_path / "long.wav"), 30.0)
    (tmp_path / "jobs.csv").write_text("video,speech,output\nmissing.mp4,long.wav,out/bad.mp4\n"
                                       "face.mp4,long.wav,out/a.mp4\nface.mp4,long.wav,out/b.mp4\n")
    path, _ = talklip_checkpoint
    proc = subprocess.Popen([sys.executable, "inf_demo.py", "--jobs", str(tmp_path / "jobs.csv"), "--ckpt_path", path,
                             "--device", "cpu", "--no_progress"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (tmp_path / "out").exists() and any(".tmp-" in n for n in os.listdir(tmp_path / "out")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-1000:]
    failures = (tmp_path / "jobs.failures_1of1.txt").read_text().splitlines()
    assert len(failures) == 1 and failures[0].startswith("row 1\t")


def test_a_jobs_file_saved_as_utf16_is_read_and_nul_bytes_are_named(tmp_path):
    from dubbing.jobs import read_jobs
    from utils.errors import TalkLipError
    (tmp_path / "jobs.csv").write_bytes("video,speech,output\r\nface.mp4,s0.wav,out/a\r\n".encode("utf-16"))
    jobs = read_jobs(str(tmp_path / "jobs.csv"))
    assert [(os.path.basename(j.video), os.path.basename(j.output)) for j in jobs] == [("face.mp4", "a.mp4")]
    (tmp_path / "jobs.csv").write_bytes("video,speech,output\nface.mp4,s0.wav,out/a\n".encode("utf-16-le"))
    with pytest.raises(TalkLipError, match="jobs file .*jobs.csv, line 1, holds NUL characters"):
        read_jobs(str(tmp_path / "jobs.csv"))


def test_a_generator_that_records_its_face_framing_is_shown_faces_framed_so(tmp_path, cpu_generator, capsys):
    """A generator trained on crops that frame the face unlike the dub's detector (face_detection.framing) records
    the framing; the dub maps every box by it, so with --paste face the generated pixels fill the framed crop: here
    the box's lower right quarter, the rest of the box untouched. A framing measured with another detector is not
    applied, and inf_demo.py says so."""
    head = astronaut_head(260, 300)
    face = np.full((360, 480, 3), 90, np.uint8)
    face[30:330, 110:370] = head
    video, audio = str(tmp_path / "in.mp4"), str(tmp_path / "a.wav")
    write_clip(video, [face] * 10)
    tone(audio, 10 / 25)
    write_clip(str(tmp_path / "again.mp4"), list(VideoReader(video)))
    again = np.stack(list(VideoReader(str(tmp_path / "again.mp4")))).astype(int)
    x1, y1, x2, y2 = CascadeDetector().detect_faces(face[None])[0][0][:4].astype(int)
    mx, my = (x1 + x2) // 2, (y1 + y2) // 2
    generator = copy.copy(cpu_generator)
    changes = {}
    for tag, recorded in (("none", None), ("framed", {"framing": [0.5, 0.5, 1.0, 1.0], "detector": CascadeDetector.name}),
                          ("other", {"framing": [0.5, 0.5, 1.0, 1.0], "detector": "s3fd"})):
        generator.face_framing = recorded
        out = str(tmp_path / f"{tag}.mp4")
        info = dub(generator, video, audio, out, CascadeDetector(), SynthesisOptions(progress=False, paste="face"))
        diff = np.abs(np.stack(list(VideoReader(out))).astype(int) - again).mean(axis=(0, 3))
        changes[tag] = {"upper_left": diff[y1 + 4:my - 4, x1 + 4:mx - 4].mean(),
                        "lower_right": diff[my + 4:y2 - 4, mx + 4:x2 - 4].mean()}
        assert (info.framing is not None) == (tag == "framed")
        assert (info.framing_note is not None) == (tag == "other")
    assert changes["framed"]["upper_left"] < 1.0 < 5 < changes["framed"]["lower_right"]
    assert changes["none"]["upper_left"] > 5 and changes["other"]["upper_left"] > 5   # the whole box, as found
    assert "s3fd" in info.framing_note


def test_a_framing_measured_from_its_own_crops_is_the_one_that_made_them():
    """measure_framing reads back the framing that cropped a set of detector boxes; frame_box applies it."""
    from face_detection.framing import frame_box, measure_framing, valid_framing
    rng = np.random.default_rng(0)
    framing = (0.07, 0.166, 0.93, 0.927)
    det = [np.column_stack([x := rng.uniform(0, 200, 50), y := rng.uniform(0, 100, 50), x + rng.uniform(80, 160, 50),
                            y + rng.uniform(90, 180, 50)]) for _ in range(3)]
    crops = [np.stack([frame_box(b, framing) for b in d]) for d in det]
    found, frames = measure_framing(det, crops)
    assert frames == 150 and np.abs(found - framing).max() < 0.01             # up to the crops' whole pixels
    assert valid_framing([0.9, 0, 0.1, 1]) is None and valid_framing("abcd") is None and valid_framing([0, 0, 3, 1]) is None
