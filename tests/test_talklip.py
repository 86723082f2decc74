"""TalkLip models, dubbing (inf_demo.py) and test-set synthesis (inf_test.py)."""
import os

import cv2
import numpy as np
import pytest
import soundfile
import torch

from face_detection import CascadeDetector, crop_face
from dubbing import SynthesisOptions, dub
from dubbing.render import render_into
from dubbing.speech import encode_audio
from utils.timeline import frame_feature_rows, ping_pong
from utils.pipeline import StageClock
from models.presets import talklip_preset
from models.talklip import AVSync, TalkLip, TalkLipDiscriminator, bce, load_discriminator, load_talklip
from tests.conftest import Collect, run_module
from utils.audio import AUDIO_RATE_HZ, load_audio
from utils.errors import CheckpointError
from utils.video import VideoReader, VideoWriter, probe_video

# Shapes of the released checkpoints' tensors, read off the original models/talklip.py and conv.py.
ORIGINAL_GENERATOR_SHAPES = {
    "face_encoder_blocks.0.0.conv_block.0.weight": (16, 6, 7, 7),
    "face_encoder_blocks.2.3.conv_block.1.running_var": (64,),
    "face_encoder_blocks.6.1.conv_block.0.weight": (512, 512, 1, 1),
    "audio_map.weight": (512, 768),
    "face_decoder_blocks.0.0.conv_block.0.weight": (512, 512, 1, 1),
    "face_decoder_blocks.1.0.conv_block.0.weight": (1024, 512, 3, 3),      # ConvTranspose: (in, out, k, k)
    "face_decoder_blocks.6.2.conv_block.0.weight": (64, 64, 3, 3),
    "output_block.0.conv_block.0.weight": (32, 80, 3, 3),
    "output_block.1.weight": (3, 32, 1, 1),
    "sync_net.Linearaudio.weight": (768, 768),
    "audio_encoder.w2v_model.mask_emb": (104,),
    "audio_encoder.w2v_model.label_embs_concat": (2004, 256),
    "audio_encoder.w2v_model.feature_extractor_audio.proj.weight": (768, 104),
    "audio_encoder.w2v_model.post_extract_proj.weight": (768, 1536),
    "audio_encoder.w2v_model.encoder.layers.11.fc1.weight": (3072, 768),
}
ORIGINAL_DISCRIMINATOR_SHAPES = {
    "face_encoder_blocks.0.0.conv_block.0.weight": (32, 3, 7, 7),
    "face_encoder_blocks.1.0.conv_block.0.weight": (64, 32, 5, 5),
    "face_encoder_blocks.6.1.conv_block.0.weight": (512, 512, 1, 1),
    "binary_pred.0.weight": (1, 512, 1, 1),
}


def test_state_dicts_have_the_original_layout():
    gen = {k: tuple(v.shape) for k, v in TalkLip().state_dict().items()}
    disc = {k: tuple(v.shape) for k, v in TalkLipDiscriminator().state_dict().items()}
    for name, shape in ORIGINAL_GENERATOR_SHAPES.items():
        assert gen[name] == shape, name
    for name, shape in ORIGINAL_DISCRIMINATOR_SHAPES.items():
        assert disc[name] == shape, name
    assert not [k for k in gen if "final_proj" in k]      # removed as remove_pretraining_modules does
    assert len(disc) == 2 * 13 + 2                        # 13 convolutions (1 + 6 blocks of 2) and the head


def test_discriminator_loss_equals_the_original_and_cannot_saturate():
    logits = torch.tensor([[-3.0], [0.5], [4.0]])
    for label in (0.0, 1.0):
        original = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), torch.full_like(logits, label))
        torch.testing.assert_close(bce(logits, label), original)
    saturated = torch.tensor([[60.0]], requires_grad=True)
    assert torch.sigmoid(saturated).item() == 1.0                       # float32 rounds the probability to 1
    stuck = torch.nn.functional.binary_cross_entropy(torch.sigmoid(saturated), torch.zeros(1, 1))
    assert stuck.item() == 100.0 and torch.autograd.grad(stuck, saturated)[0].item() == 0.0   # the original: stuck
    ours = bce(saturated, 0.0)
    assert ours.item() == pytest.approx(60.0) and torch.autograd.grad(ours, saturated)[0].item() == pytest.approx(1.0)


def test_the_contrastive_loss_gives_the_same_gradient_on_every_run():
    """Its negatives repeat rows of the audio features; their gradients must be summed in a fixed order,
    or a resumed (or branched) run drifts from an uninterrupted one once the expert stage starts."""
    torch.manual_seed(0)
    head = AVSync(dim=256)
    video, audio = torch.randn(96, 256), torch.randn(96, 256, requires_grad=True)
    grads = []
    for _ in range(4):
        head.zero_grad()
        audio.grad = None
        head(video, audio, generator=torch.Generator().manual_seed(1)).backward()
        grads.append((audio.grad.clone(), head.Linearaudio.weight.grad.clone()))
    assert all(torch.equal(g[0], grads[0][0]) and torch.equal(g[1], grads[0][1]) for g in grads[1:])


def test_a_fresh_discriminator_separates_inputs():
    """PyTorch's default init shrinks the signal through the 13 layers (the output is ~0.5 for every face);
    the training init keeps it, so the discriminator's gradients do not vanish."""
    faces = torch.rand(16, 3, 96, 96)
    torch.manual_seed(0)
    disc = TalkLipDiscriminator(talklip_preset("cpu"))
    with torch.no_grad():
        default = disc(faces, logits=True).std()
        trained = disc.init_for_training()(faces, logits=True).std()
    assert trained > 100 * default


def test_checkpoints_load_strictly_and_errors_are_one_line(tmp_path, talklip_checkpoint):
    path, reference = talklip_checkpoint
    model = load_talklip(path)
    faces, emb = torch.rand(2, 6, 96, 96), torch.randn(2, reference.audio_dim)
    with torch.no_grad():
        torch.testing.assert_close(model.render(faces, emb), reference.render(faces, emb))
    disc = TalkLipDiscriminator()
    torch.save({"state_dict": {f"module.{k}": v for k, v in disc.state_dict().items()}, "optimizer": None,
                "global_step": 3, "global_epoch": 0}, tmp_path / "disc_checkpoint.pth")
    load_discriminator(str(tmp_path / "disc_checkpoint.pth"))
    with pytest.raises(CheckpointError, match="discriminator"):
        load_talklip(str(tmp_path / "disc_checkpoint.pth"))
    saved = torch.load(path, weights_only=True)
    state = dict(reference.state_dict())
    state.pop("audio_map.weight")
    torch.save({**saved, "state_dict": state}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as err:
        load_talklip(str(tmp_path / "broken.pth"))
    assert "broken.pth" in str(err.value) and "audio_map.weight" in str(err.value) and "\n" not in str(err.value)


def test_frame_schedules():
    assert ping_pong(9, 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert ping_pong(3, 1).tolist() == [0, 0, 0]
    assert frame_feature_rows(4, 25, 10).tolist() == [0, 1, 2, 3]
    assert frame_feature_rows(6, 50, 10).tolist() == [0, 0, 1, 1, 2, 2]
    assert frame_feature_rows(7, 30, 100).tolist() == [0, 0, 1, 2, 3, 4, 5]      # floor(i * 25 / 30)
    assert frame_feature_rows(5, 25, 3).tolist() == [0, 1, 2, 2, 2]


def test_long_audio_is_encoded_in_windows(talklip_checkpoint):
    _, model = talklip_checkpoint
    feats = np.random.default_rng(0).standard_normal((70, 104)).astype(np.float32)
    whole = encode_audio(model, feats, "cpu", max_frames=100)
    windowed = encode_audio(model, feats, "cpu", max_frames=40, overlap=10)
    assert whole.shape == windowed.shape == (70, model.audio_dim)
    first_window = encode_audio(model, feats[:40], "cpu", max_frames=100)
    torch.testing.assert_close(windowed[:20], first_window[:20])              # kept centre, stitched in place
    assert (windowed - whole).abs().mean() < (whole.abs().mean())             # same signal, local context


@pytest.fixture(scope="module")
def clip(corpus):
    data, splits = corpus
    return os.path.join(data, "main", f"{splits['all'][0]}.mp4")


def write_tone(path, seconds, rate=AUDIO_RATE_HZ, channels=1, **kw):
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    soundfile.write(path, np.stack([tone] * channels, axis=1) if channels > 1 else tone, rate, **kw)


def frames_of(path):
    return np.stack(list(VideoReader(path)))


def test_only_the_face_box_changes_and_chunking_does_not_matter(talklip_checkpoint, clip):
    _, model = talklip_checkpoint
    boxes = np.load(clip.replace("/main/", "/gt/").replace(".mp4", ".npz"))["face_box"].round().astype(np.int64)
    num = 12
    emb = torch.randn(num, model.audio_dim)
    outputs = {}
    for chunk, feather in ((5, 0), (64, 0), (64, 6)):
        opts = SynthesisOptions(chunk_frames=chunk, batch_size=4, feather=feather, progress=False, paste="face")
        out = Collect()
        frames = frames_of(clip)[:num]
        render_into(out, model, zip(frames, boxes, range(num)), emb, opts, StageClock())
        outputs[(chunk, feather)] = np.stack(out.frames)
    np.testing.assert_array_equal(outputs[(5, 0)], outputs[(64, 0)])
    original = frames_of(clip)[:num]
    for (chunk, feather), out in outputs.items():
        for k in range(num):
            x1, y1, x2, y2 = boxes[k]
            outside = np.ones(original.shape[1:3], bool)
            outside[max(0, y1):y2, max(0, x1):x2] = False
            np.testing.assert_array_equal(out[k][outside], original[k][outside])
    hard, soft = outputs[(64, 0)][0].astype(int), outputs[(64, 6)][0].astype(int)
    x1, y1, x2, y2 = boxes[0]
    np.testing.assert_array_equal(soft[y1 + 6:y2 - 6, x1 + 6:x2 - 6], hard[y1 + 6:y2 - 6, x1 + 6:x2 - 6])
    assert np.abs(soft[y1, x1:x2] - original[0][y1, x1:x2]).mean() < np.abs(hard[y1, x1:x2] - original[0][y1, x1:x2]).mean()


@pytest.mark.parametrize("seconds,kind", [(1.2, "wav48k_stereo"), (4.5, "mp3"), (1.0, "ogg")])
def test_dub_follows_the_audio_in_any_format(tmp_path, talklip_checkpoint, clip, seconds, kind):
    _, model = talklip_checkpoint
    audio = tmp_path / {"wav48k_stereo": "a.wav", "mp3": "a.mp3", "ogg": "a.ogg"}[kind]
    if kind == "wav48k_stereo":
        write_tone(audio, seconds, rate=48000, channels=2)
    else:
        write_tone(audio, seconds, rate=22050, format=kind.upper())
    duration = len(load_audio(str(audio))) / AUDIO_RATE_HZ
    out = str(tmp_path / "out.mp4")
    info = dub(model, clip, str(audio), out, CascadeDetector(), SynthesisOptions(chunk_frames=16, progress=False))
    video = probe_video(out)
    source = probe_video(clip)
    assert video.fps == pytest.approx(source.fps) and (video.width, video.height) == (source.width, source.height)
    assert video.num_frames == info.frames == round(duration * source.fps)
    assert abs(len(load_audio(out)) / AUDIO_RATE_HZ - duration) <= 1 / source.fps + 0.03
    if video.num_frames > source.num_frames:             # longer audio: the video plays back again
        frames, src = frames_of(out), frames_of(clip)
        k = source.num_frames + 3                          # shows source frame n - 1 - 3
        distance = np.abs(frames[k, :20].astype(int)[None] - src[:, :20].astype(int)).mean(axis=(1, 2, 3))
        assert abs(int(np.argmin(distance)) - (source.num_frames - 4)) <= 1   # the head drifts slowly
        assert distance[3] > distance[source.num_frames - 4]


def test_still_image_and_other_frame_rates(tmp_path, talklip_checkpoint, clip):
    _, model = talklip_checkpoint
    write_tone(tmp_path / "a.wav", 0.8)
    image = frames_of(clip)[0]
    cv2.imwrite(str(tmp_path / "face.png"), image)
    dub(model, str(tmp_path / "face.png"), str(tmp_path / "a.wav"), str(tmp_path / "still.mp4"),
        CascadeDetector(), SynthesisOptions(progress=False))
    assert probe_video(str(tmp_path / "still.mp4")).num_frames == 20
    with VideoWriter(str(tmp_path / "v30.mp4"), 30, image.shape[1], image.shape[0]) as writer:
        for frame in frames_of(clip)[:30]:
            writer.write(frame)
    dub(model, str(tmp_path / "v30.mp4"), str(tmp_path / "a.wav"), str(tmp_path / "out30.mp4"),
        CascadeDetector(), SynthesisOptions(progress=False))
    info = probe_video(str(tmp_path / "out30.mp4"))
    assert info.fps == pytest.approx(30) and info.num_frames == 24


def test_inf_demo_cli_errors_leave_no_output(tmp_path, talklip_checkpoint, clip):
    path, _ = talklip_checkpoint
    write_tone(tmp_path / "a.wav", 0.5)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(3000))
    torch.save({"state_dict": {"audio_map.weight": torch.zeros(1)}}, tmp_path / "wrong.pth")
    cases = [(["--video_path", corrupt, "--ckpt_path", path], "corrupt.mp4"),
             (["--video_path", clip, "--ckpt_path", tmp_path / "none.pth"], "none.pth does not exist"),
             (["--video_path", clip, "--ckpt_path", tmp_path / "wrong.pth"], "wrong.pth does not match")]
    for args, expected in cases:
        proc = run_module("inf_demo", *args, "--wav_path", tmp_path / "a.wav", "--save_path", tmp_path / "out",
                          "--device", "cpu", "--no_progress")
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and expected in last and "Traceback" not in proc.stderr
        assert not [p for p in os.listdir(tmp_path) if p.startswith("out") or ".tmp-" in p]


def test_inf_demo_cli_writes_the_dub(tmp_path, talklip_checkpoint, clip):
    path, _ = talklip_checkpoint
    write_tone(tmp_path / "a.wav", 0.6)
    proc = run_module("inf_demo", "--video_path", clip, "--wav_path", tmp_path / "a.wav", "--ckpt_path", path,
                      "--save_path", tmp_path / "dubbed", "--device", "cpu", "--avhubert_root", "/x", "--no_progress")
    assert proc.returncode == 0, proc.stderr
    assert "--avhubert_root is ignored" in proc.stderr
    assert probe_video(str(tmp_path / "dubbed.mp4")).num_frames == 15


def test_inf_test_synthesizes_the_test_split(tmp_path, corpus, one_shard, talklip_checkpoint):
    data, splits = corpus
    path, _ = talklip_checkpoint
    filelist = tmp_path / "test.txt"
    filelist.write_text("\n".join(splits["test"] + ["missing/00001"]) + "\n")
    args = ["--filelist", filelist, "--video_root", f"{data}/main", "--audio_root", one_shard / "audio",
            "--bbx_root", one_shard / "bbx", "--save_root", tmp_path / "synt", "--ckpt_path", path,
            "--device", "cpu", "--check"]
    proc = run_module("inf_test", *args)
    assert proc.returncode == 3, proc.stderr
    assert "failed: missing/00001:" in proc.stderr and "Traceback" not in proc.stderr
    for name in splits["test"]:
        out, src = probe_video(str(tmp_path / "synt" / f"{name}.mp4")), probe_video(f"{data}/main/{name}.mp4")
        assert (out.num_frames, out.fps, out.width) == (src.num_frames, src.fps, src.width)
        assert abs(len(load_audio(str(tmp_path / "synt" / f"{name}.mp4"))) / 16000 - src.duration_s) <= 0.05
    again = run_module("inf_test", *args)
    assert f"{len(splits['test'])} already done" in again.stderr


class ReferenceEcho(TalkLip):
    """A generator whose face is its reference input: what inf_test feeds as reference becomes visible."""

    def render(self, faces, audio_emb):
        return faces[:, 3:6]


def test_inf_test_regenerates_each_frame_from_the_first_frame_as_reference(tmp_path, corpus, one_shard):
    from models.presets import encoder_preset
    from dubbing import synthesize_test_clip
    from utils.corpus import load_boxes
    data, splits = corpus
    name = splits["test"][0]
    wav = str(one_shard / "audio" / f"{name}.wav")
    boxes = load_boxes(str(one_shard / "bbx"), name)
    frames = frames_of(f"{data}/main/{name}.mp4")
    frames[0] = 255 - frames[0]                        # a first frame unlike the others
    video = str(tmp_path / "clip.mp4")
    with VideoWriter(video, probe_video(f"{data}/main/{name}.mp4").fps, frames.shape[2], frames.shape[1]) as writer:
        writer.write_batch(frames)
    out = str(tmp_path / "synt.mp4")
    torch.manual_seed(0)
    echo = ReferenceEcho(encoder_preset("tiny"), talklip_preset("cpu")).eval()
    synthesize_test_clip(echo, video, wav, boxes, out, SynthesisOptions(progress=False))
    source, synthesized = frames_of(video), frames_of(out).astype(int)
    first = crop_face(source[0], boxes[0])             # the protocol's reference, for every frame
    errors_first, errors_own = [], []
    for k in range(1, len(source)):
        x1, y1, x2, y2 = (int(v) for v in boxes[k])
        x1, y1 = max(0, x1), max(0, y1)
        x2, y2 = min(source.shape[2], x2), min(source.shape[1], y2)
        shown = synthesized[k, y1:y2, x1:x2]
        for reference, errors in ((first, errors_first), (crop_face(source[k], boxes[k]), errors_own)):
            expected = cv2.resize(reference, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR).astype(int)
            errors.append(np.abs(shown - expected).mean())
    assert max(errors_first) < 4.0                     # the first frame's face, up to resizing and H.264
    assert min(errors_own) > 50                        # not the frame's own face (the demo's protocol)
