"""TalkLip audio features against an independent float64 computation, loading, alignment."""
import numpy as np
import pytest
import soundfile
import torch

from utils.audio import (AUDIO_RATE_HZ, FEATURE_DIM, audio_visual_align, float_to_int16, load_audio,
                         talklip_features)
from utils.errors import MediaError


def reference_features(samples: np.ndarray) -> np.ndarray:
    """Log mel filterbank (26 bands, 25 ms / 10 ms, 512-point FFT, pre-emphasis 0.97, rectangular
    window), 4 frames stacked, layer norm, all written out in float64 from the definitions."""
    rate, win, hop, nfft, nfilt = 16000, 400, 160, 512, 26
    x = np.asarray(samples, np.float64)
    x = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    n_frames = 1 if len(x) <= win else 1 + int(np.ceil((len(x) - win) / hop))
    x = np.pad(x, (0, (n_frames - 1) * hop + win - len(x)))
    frames = np.stack([x[i * hop: i * hop + win] for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    mel = lambda hz: 2595 * np.log10(1 + hz / 700.0)
    inv = lambda m: 700 * (10 ** (m / 2595.0) - 1)
    points = inv(np.linspace(mel(0), mel(rate / 2), nfilt + 2))
    bins = np.floor((nfft + 1) * points / rate).astype(int)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for k in range(lo, mid):
            bank[j, k] = (k - lo) / (mid - lo)
        for k in range(mid, hi):
            bank[j, k] = (hi - k) / (hi - mid)
    energy = power @ bank.T
    energy[energy == 0] = np.finfo(float).eps
    logfb = np.log(energy)
    pad = (-len(logfb)) % 4
    logfb = np.concatenate([logfb, np.zeros((pad, nfilt))]).reshape(-1, 4 * nfilt)
    mean = logfb.mean(axis=1, keepdims=True)
    var = logfb.var(axis=1, keepdims=True)
    return (logfb - mean) / np.sqrt(var + 1e-5)


def speechlike(seconds=1.3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * AUDIO_RATE_HZ)) / AUDIO_RATE_HZ
    wav = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(len(t))
    return wav.astype(np.float32)


def test_features_match_independent_float64_computation():
    wav = float_to_int16(speechlike())
    ours = talklip_features(wav, 16000)
    ref = reference_features(wav.astype(np.float64))
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert ours.shape[1] == FEATURE_DIM
    assert len(ours) == int(np.ceil(len(wav) / 640))   # 25 Hz
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_float_and_int16_inputs_agree():
    wav = speechlike(seed=1)
    from_float = talklip_features(wav, 16000)
    from_int = talklip_features(float_to_int16(wav), 16000)
    np.testing.assert_allclose(from_float, from_int, atol=1e-3)


def test_other_sample_rates_are_resampled_to_16k():
    wav16 = speechlike(seed=2)
    t = np.arange(int(1.3 * 48000)) / 48000
    wav48 = np.interp(t, np.arange(len(wav16)) / 16000, wav16).astype(np.float32)
    f16, f48 = talklip_features(wav16, 16000), talklip_features(wav48, 48000)
    assert f16.shape == f48.shape
    corr = np.corrcoef(f16.ravel(), f48.ravel())[0, 1]
    assert corr > 0.95


def test_load_audio_downmixes_and_resamples(tmp_path):
    rate = 44100
    t = np.arange(rate) / rate
    left, right = 0.4 * np.sin(2 * np.pi * 300 * t), 0.2 * np.sin(2 * np.pi * 300 * t)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([left, right], axis=1), rate)
    wav = load_audio(str(path))
    assert wav.dtype == np.float32 and abs(len(wav) - 16000) <= 1
    expected = 0.3 * np.sin(2 * np.pi * 300 * np.arange(len(wav)) / 16000)
    middle = slice(200, -200)   # filter edges aside
    np.testing.assert_allclose(wav[middle], expected[middle], atol=5e-3)


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(MediaError, match="missing.wav"):
        load_audio(str(tmp_path / "missing.wav"))
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all" * 10)
    with pytest.raises(MediaError, match="junk.mp3"):
        load_audio(str(junk))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_audio_visual_align(as_tensor):
    feats = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    if as_tensor:
        feats = torch.from_numpy(feats)
    to_np = lambda a: a.numpy() if isinstance(a, torch.Tensor) else a
    centre = to_np(audio_visual_align(feats, 7, "center"))
    np.testing.assert_array_equal(centre[:, 0], np.arange(1, 8) * 2)       # 3 extra: 1 left, 2 right
    end = to_np(audio_visual_align(feats, 7, "end"))
    np.testing.assert_array_equal(end[:, 0], np.arange(7) * 2)
    padded = to_np(audio_visual_align(feats, 12))
    assert padded.shape == (12, 2) and not padded[10:].any()
    np.testing.assert_array_equal(padded[:10], to_np(feats))


def speech_like(seconds=1.0, rate=AUDIO_RATE_HZ):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize("rate", [AUDIO_RATE_HZ, 22050])
def test_speech_with_nan_or_inf_samples_is_refused_when_read(tmp_path, rate):
    """A float WAV with a NaN (or an infinity) is refused by every reader, naming the file and where the
    first bad sample is, before anything is made from it (read in place at 16 kHz, whole otherwise)."""
    from utils.audio import SpeechSamples
    for bad in (np.nan, np.inf):
        wav = speech_like(2.0, rate)
        wav[int(1.5 * rate)] = bad
        path = tmp_path / f"bad_{rate}.wav"
        soundfile.write(path, wav, rate, subtype="FLOAT")
        with pytest.raises(MediaError, match=r"bad_\d+\.wav has NaN or infinite samples \(the first at 1\.50 s\)"):
            load_audio(str(path))
        with pytest.raises(MediaError, match="NaN or infinite"):
            SpeechSamples(str(path), str(tmp_path))


@pytest.mark.parametrize("rate", [AUDIO_RATE_HZ, 22050])
def test_antiphase_stereo_is_read_from_one_channel_not_mixed_to_silence(tmp_path, rate, capsys):
    """right = -left mixes to exactly zero; the readers take the louder channel instead and say so once.
    Ordinary stereo is still averaged."""
    from utils.audio import SpeechSamples
    left = speech_like(1.0, rate)
    path = tmp_path / "antiphase.wav"
    soundfile.write(path, np.stack([left, -0.9 * left], 1), rate, subtype="FLOAT")
    expected = resample_reference(left, rate)
    np.testing.assert_allclose(load_audio(str(path)), expected, atol=1e-4)
    with SpeechSamples(str(path), str(tmp_path)) as samples:
        np.testing.assert_allclose(samples.read(0, samples.count), expected, atol=1e-4)
    said = capsys.readouterr().err
    assert said.count("channels cancel") == 2 and "channel 1 of 2, the loudest" in said
    soundfile.write(path, np.stack([left, 0.5 * left], 1), rate, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(str(path)), resample_reference(0.75 * left, rate), atol=1e-4)
    assert "cancel" not in capsys.readouterr().err


def resample_reference(wav, rate):
    from scipy.signal import resample_poly
    if rate == AUDIO_RATE_HZ:
        return wav
    import math
    g = math.gcd(rate, AUDIO_RATE_HZ)
    return resample_poly(wav.astype(np.float64), AUDIO_RATE_HZ // g, rate // g).astype(np.float32)


def test_a_full_temporary_folder_is_named_not_blamed_on_the_speech(tmp_path, monkeypatch):
    """Speech that needs converting (here m4a) is written into the dub's temporary folder; when that folder
    is full (its file is /dev/full here), the error names the folder and TMPDIR, not the speech file."""
    from utils.audio import SpeechSamples
    from utils.ffmpeg import run_ffmpeg
    soundfile.write(tmp_path / "speech.wav", speech_like(1.0, 22050), 22050)
    run_ffmpeg(["-i", str(tmp_path / "speech.wav"), "-c:a", "aac", str(tmp_path / "speech.m4a")], source="test")
    workdir = tmp_path / "tmp"
    workdir.mkdir()
    (workdir / "speech_16k.wav").symlink_to("/dev/full")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(MediaError) as error:
        SpeechSamples(str(tmp_path / "speech.m4a"), str(workdir))
    message = str(error.value)
    assert f"no space left in {workdir}" in message and "TMPDIR" in message and "re-encode" not in message


def surround_clip(folder, centre_speech=True):
    """2 s of 5.1 at 48 kHz: speech-like bursts in the centre (or nowhere), music in the four others, LFE rumble;
    as WAV (no channel mask), AAC in .m4a and a video's AAC track."""
    import subprocess
    from utils.ffmpeg import ffmpeg_exe
    rate = 48000
    t = np.arange(2 * rate) / rate
    speech = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    music, lfe = 0.3 * np.sin(2 * np.pi * 523 * t), 0.3 * np.sin(2 * np.pi * 40 * t)
    centre = speech if centre_speech else np.zeros_like(t)
    soundfile.write(folder / "s.wav", np.stack([music, music, centre, lfe, music, music], 1).astype(np.float32), rate)
    exe = ffmpeg_exe()
    subprocess.run([exe, "-v", "error", "-y", "-i", str(folder / "s.wav"), "-c:a", "aac", "-b:a", "256k",
                    str(folder / "s.m4a")], check=True)
    subprocess.run([exe, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=64x64:r=25:d=2", "-i",
                    str(folder / "s.wav"), "-c:v", "libx264", "-c:a", "aac", "-shortest", str(folder / "s.mp4")],
                   check=True)
    return speech[::3], music[::3], lfe[::3]


def share_of(mono, signal):
    """How much of ``mono`` is ``signal`` (least squares), in dB against the rest."""
    n = min(len(mono), len(signal))
    mono, signal = np.asarray(mono[:n], np.float64), np.asarray(signal[:n], np.float64)
    gain = mono @ signal / (signal @ signal)
    rest = mono - gain * signal
    return 10 * np.log10((gain * signal) @ (gain * signal) / max(rest @ rest, 1e-12))


def test_surround_speech_is_the_centre_channel_in_every_format_and_path(tmp_path, capsys):
    """5.1 with the dialogue in the centre and music in the other channels: WAV/FLAC averaged all six (the centre
    at 1/6: speech 15 dB under the music), AAC went through ffmpeg's stereo matrix (11 dB under). Now every format
    and every path (load_audio, the dub's SpeechSamples, preprocessing's extract_audio) keeps the centre alone."""
    from utils.audio import SpeechSamples
    from utils.video import extract_audio
    speech, music, _ = surround_clip(tmp_path)
    monos = {"wav": load_audio(str(tmp_path / "s.wav")), "m4a": load_audio(str(tmp_path / "s.m4a")),
             "video": load_audio(str(tmp_path / "s.mp4"))}
    with SpeechSamples(str(tmp_path / "s.m4a"), str(tmp_path)) as samples:
        monos["dub"] = samples.read(0, samples.count)
    extract_audio(str(tmp_path / "s.mp4"), str(tmp_path / "pre.wav"))
    monos["preprocessing"] = soundfile.read(str(tmp_path / "pre.wav"))[0]
    for path, mono in monos.items():
        assert share_of(mono, speech) > 25, (path, share_of(mono, speech))       # the music is gone
    assert "its centre channel, where surround mixes put the dialogue, is the speech" in capsys.readouterr().err


def test_surround_without_a_centre_voice_is_mixed_as_bs775_without_the_lfe(tmp_path):
    """A silent centre: ITU-R BS.775's downmix, the LFE dropped (its 40 Hz rumble is not in the mono)."""
    _, music, lfe = surround_clip(tmp_path, centre_speech=False)
    mono = load_audio(str(tmp_path / "s.wav"))
    assert share_of(mono, music) > 40
    n = min(len(mono), len(lfe))
    assert abs(np.dot(mono[:n], lfe[:n])) / np.dot(lfe[:n], lfe[:n]) < 1e-3
