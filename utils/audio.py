"""Everything about audio: loading, resampling, TalkLip's features and audio/video alignment.

TalkLip's audio encoder (AV-HuBERT BASE) reads 26-band log filterbanks computed at 16 kHz
with a 10 ms hop (100 Hz), four consecutive frames stacked into one 104-dim vector (25 Hz,
one per video frame at 25 fps), then layer-normalised over the feature axis.
"""
import math
import os
import subprocess
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from utils.errors import MediaError, one_line, say_on_stderr
from utils.ffmpeg import run_ffmpeg
from utils.fileio import atomic_output

AUDIO_RATE_HZ = 16000          # all models read 16 kHz mono speech
FBANK_RATE_HZ = 100            # python_speech_features' default 10 ms hop
STACK_ORDER = 4                # filterbank frames stacked per feature frame
FEATURE_RATE_HZ = FBANK_RATE_HZ // STACK_ORDER   # 25 Hz: one feature per 25 fps video frame
N_FILTERBANKS = 26
FEATURE_DIM = N_FILTERBANKS * STACK_ORDER        # 104
INT16_SCALE = 32768.0          # float samples in [-1, 1) times this give int16-range samples

Array = Union[np.ndarray, torch.Tensor]


def resample(wav: np.ndarray, rate_in: int, rate_out: int = AUDIO_RATE_HZ) -> np.ndarray:
    """Band-limited polyphase resampling of a 1-D (T,) or 2-D (T, C) float signal."""
    if rate_in == rate_out:
        return wav
    from scipy.signal import resample_poly       # here, not at import: scipy.signal takes 0.5 s to import
    common = math.gcd(int(rate_in), int(rate_out))
    return resample_poly(wav, rate_out // common, rate_in // common, axis=0)


UNDECLARED_ORDER = ("FL", "FR", "FC", "LFE", "BL", "BR", "FLC", "FRC", "BC", "SL", "SR")   # WAVE's channel-mask bits


def channel_names(path: str) -> list:
    """The first audio stream's channels by ffmpeg's names (FL FR FC LFE BL BR SL SR ...), in the order its
    samples interleave them; [] when it cannot be read. A file that declares no layout (a WAV without a channel
    mask) is read in WAVE's channel order (``UNDECLARED_ORDER``: 6 channels are FL FR FC LFE BL BR)."""
    import av
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                return []
            stream = container.streams.audio[0]
            names = [channel.name for channel in stream.layout.channels]
            if len(names) != stream.channels or any(n in ("NONE", "UNK", "USR") for n in names):
                names = list(UNDECLARED_ORDER[:stream.channels])
                names += [f"C{k}" for k in range(len(names), stream.channels)]
            return names
    except (av.FFmpegError, OSError, ValueError):
        return []


def _decode_with_ffmpeg(path: str, rate: int) -> np.ndarray:
    """(T, C) float32, every channel of the first audio stream as it is (a stereo of one channel for a file
    whose layout cannot be read), downmixed by the caller."""
    channels = len(channel_names(path))
    layout = ["-ac", "2"] if channels == 0 else []
    raw = run_ffmpeg(["-i", path, "-vn", "-map", "0:a:0", *layout, "-ar", str(rate), "-f", "f32le", "-"],
                     source=path, stdout=subprocess.PIPE)
    return np.frombuffer(raw, dtype="<f4").reshape(-1, channels or 2).copy()


# More than two channels (5.1, 7.1, ...) go to mono one way in every format (WAV, FLAC, AAC in mp4, ...):
# - the centre channel alone when there is one and it is not silent (power at least CENTRE_SHARE of the loudest
#   channel's): surround mixes put the dialogue there, and music and effects in the others;
# - else ITU-R BS.775's stereo downmix (L = FL + 0.707 C + 0.707 SL, R likewise), averaged, LFE dropped.
# On a 5.1 clip with speech in the centre and music in the four others, the centre rule keeps the speech
# alone where BS.775 would mix the music in 6 dB below it (tests/test_audio.py measures it).
CENTRE_SHARE = 0.01
BS775_MONO = {"FL": 0.5, "FR": 0.5, "FC": 0.7071, "LFE": 0.0, "BL": 0.3536, "BR": 0.3536, "SL": 0.3536, "SR": 0.3536,
              "BC": 0.5, "FLC": 0.5, "FRC": 0.5}
SIDE_WEIGHT = 0.3536       # any other channel (wides, heights): as a surround


def multichannel_weights(names: list, power: np.ndarray, path: str, say=None) -> np.ndarray:
    """(C,) mono weights of a file of more than two channels named ``names`` (power: each channel's), said once."""
    say = say or say_on_stderr
    weights = np.zeros(len(names))
    if "FC" in names and power[names.index("FC")] >= CENTRE_SHARE * power.max() > 0:
        weights[names.index("FC")] = 1.0
        say(f"note: {path} has {len(names)} channels ({' '.join(names)}): its centre channel, where surround mixes "
            f"put the dialogue, is the speech")
        return weights
    weights[:] = [BS775_MONO.get(name, SIDE_WEIGHT) for name in names]
    say(f"note: {path} has {len(names)} channels ({' '.join(names)}): mixed to mono as ITU-R BS.775 mixes them to "
        f"stereo, LFE dropped" + (" (its centre channel is silent)" if "FC" in names else ""))
    return weights


# A mix of the channels whose power is under this share of its loudest channel's cancels (antiphase
# stereo, right = -left, mixes to silence): the loudest channel is used alone instead.
CANCELLING_MIX = 0.01
BLOCK_FRAMES = 1 << 20      # samples per channel read at a time when a whole file is checked


class SampleCheck:
    """Running checks over a speech file's (T, C) samples, block by block: every sample finite, and
    the power of each channel and of their mean (the downmix)."""

    def __init__(self, path: str, channels: int, rate: int):
        self.path, self.rate = path, rate
        self.seen, self.channel_power, self.mix_power = 0, np.zeros(channels), 0.0

    def add(self, block: np.ndarray) -> None:
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            at = (self.seen + int(np.argmin(finite))) / self.rate
            raise MediaError(f"{self.path} has NaN or infinite samples (the first at {at:.2f} s): re-export the "
                             f"speech (e.g. as 16-bit PCM WAV) from a clean source")
        wide = block.astype(np.float64)
        self.channel_power += (wide ** 2).sum(axis=0)
        self.mix_power += float((wide.mean(axis=1) ** 2).sum())
        self.seen += len(block)

    def channel(self, say=None) -> Optional[int]:
        """None: average the channels (the usual downmix); else the one channel to use, when the average
        cancels (said once through ``say``, default stderr)."""
        if len(self.channel_power) < 2 or self.channel_power.max() <= 0:
            return None
        loudest = int(np.argmax(self.channel_power))
        if self.mix_power >= CANCELLING_MIX * self.channel_power[loudest]:
            return None
        (say or say_on_stderr)(f"note: {self.path}: its channels cancel when mixed to mono (antiphase), so channel "
                         f"{loudest + 1} of {len(self.channel_power)}, the loudest, is used alone")
        return loudest


def channel_powers(path: str, channels: int) -> np.ndarray:
    """(C,) each channel's mean power over the first audio stream, streamed through ffmpeg a block at a time
    (memory does not grow with the file); non-finite samples are refused as ``SampleCheck`` refuses them."""
    import subprocess as sp
    from utils.ffmpeg import ffmpeg_exe
    check = SampleCheck(path, channels, AUDIO_RATE_HZ)
    proc = sp.Popen([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", path, "-vn", "-map", "0:a:0", "-ar",
                     str(AUDIO_RATE_HZ), "-f", "f32le", "-"], stdout=sp.PIPE, stderr=sp.DEVNULL)
    block_bytes = 4 * channels * (1 << 16)
    try:
        while True:
            raw = proc.stdout.read(block_bytes)
            if not raw:
                break
            usable = len(raw) - len(raw) % (4 * channels)
            check.add(np.frombuffer(raw[:usable], dtype="<f4").reshape(-1, channels))
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()
    return check


def mix_filter(path: str) -> list:
    """ffmpeg's arguments that mix a file's audio to mono as ``load_audio`` does: ``-ac 1`` (the mean) for one
    or two channels, a ``pan`` of ``multichannel_weights`` for more."""
    names = channel_names(path)
    if len(names) <= 2:
        return ["-ac", "1"]
    check = channel_powers(path, len(names))
    weights = multichannel_weights(names, check.channel_power, path)
    terms = "+".join(f"{w:.4f}*c{k}" for k, w in enumerate(weights) if w > 0)
    return ["-af", f"pan=mono|c0={terms}"]


def mono_weights(check: "SampleCheck", names: list, say=None) -> np.ndarray:
    """(C,) weights that mix a file's channels to mono: one channel alone (a silent mono file's only one); two
    averaged, or the louder alone when they cancel (``SampleCheck.channel``); more: ``multichannel_weights``."""
    channels = len(check.channel_power)
    if channels > 2:
        names = names if len(names) == channels else [f"C{k}" for k in range(channels)]
        return multichannel_weights(names, check.channel_power, check.path, say)
    alone = check.channel(say)
    if alone is None:
        return np.full(channels, 1.0 / channels)
    weights = np.zeros(channels)
    weights[alone] = 1.0
    return weights


def downmix(data: np.ndarray, path: str, rate: int, names: Optional[list] = None) -> np.ndarray:
    """(T, C) samples -> (T,) mono after SampleCheck's checks, by ``mono_weights`` (``names``: the channels'
    layout, read from the file when not given and there are more than two)."""
    check = SampleCheck(path, data.shape[1], rate)
    for start in range(0, len(data), BLOCK_FRAMES):
        check.add(data[start:start + BLOCK_FRAMES])
    if data.shape[1] > 2 and names is None:
        names = channel_names(path)
    weights = mono_weights(check, names or [])
    if np.count_nonzero(weights) == 1:
        return data[:, int(np.flatnonzero(weights)[0])]
    if np.allclose(weights, weights[0]):
        return data.mean(axis=1)
    return (data.astype(np.float64) @ weights).astype(np.float32)


def load_audio(path: str, rate: int = AUDIO_RATE_HZ) -> np.ndarray:
    """Any common audio (or a video's audio track) as mono float32 in [-1, 1] at ``rate``.

    WAV/FLAC/OGG/MP3 are read with libsndfile and resampled with a polyphase filter;
    other containers (mp4, m4a, ...) are decoded by the bundled ffmpeg.
    Returns: (T,) float32.
    """
    if not os.path.isfile(path):
        raise MediaError(f"audio file {path} does not exist: check the path")
    import soundfile
    try:
        data, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception:
        wav = downmix(_decode_with_ffmpeg(path, rate), path, rate)
    else:
        wav = resample(downmix(data, path, file_rate), file_rate, rate)
    if wav.size == 0:
        raise MediaError(f"{path} has no audio samples: give a file with a speech track")
    return np.ascontiguousarray(wav, dtype=np.float32)


def speech_seconds(path: str, stop_after_s: float) -> float:
    """How long the first audio stream of ``path`` plays, decoding it packet by packet (memory does not
    grow with its length) and stopping as soon as it passes ``stop_after_s``: then a value above that
    bound is returned, not the whole length. A container's declared duration is not trusted."""
    import av
    if not os.path.isfile(path):
        raise MediaError(f"audio file {path} does not exist: check the path")
    seconds = 0.0
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise MediaError(f"{path} has no audio stream: give a file with a speech track")
            for frame in container.decode(audio=0):
                seconds += frame.samples / float(frame.sample_rate)
                if seconds > stop_after_s:
                    break
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"cannot read the speech in {path} ({one_line(exc)}): give a WAV, MP3, M4A or another "
                         f"common audio file") from None
    if seconds == 0:
        raise MediaError(f"{path} has no audio samples: give a file with a speech track")
    return seconds


FBANK_WINDOW = 400             # samples per filterbank frame (25 ms)
FBANK_HOP = AUDIO_RATE_HZ // FBANK_RATE_HZ        # 160
PREEMPHASIS = 0.97             # python_speech_features' default, as the original uses it
IN_MEMORY_S = 600              # speech needing resampling up to this long is read whole (as load_audio)


class SpeechSamples:
    """A speech file as 16 kHz mono float32 samples, read by range (``read(start, stop)``) without
    holding the whole file: a 16 kHz file that libsndfile reads (WAV, FLAC, ...) is read in place;
    another rate up to ``IN_MEMORY_S`` seconds is loaded whole by :func:`load_audio` (same samples);
    anything longer, or another container (mp3 in mp4, m4a, ...), is converted once by the bundled
    ffmpeg into a temporary 16 kHz WAV (ffmpeg's resampler). ``count``: samples in all."""

    def __init__(self, path: str, workdir: str):
        import soundfile
        if not os.path.isfile(path):
            raise MediaError(f"audio file {path} does not exist: check the path")
        self.path, self._file, self._wav = path, None, None
        try:
            info = soundfile.info(path)
        except Exception:
            info = None
        if info is not None and info.samplerate == AUDIO_RATE_HZ:
            self._file = soundfile.SoundFile(path)
        elif info is not None and info.frames <= IN_MEMORY_S * info.samplerate:
            self._wav = load_audio(path)
        else:
            converted = os.path.join(workdir, "speech_16k.wav")
            layout = [] if channel_names(path) else ["-ac", "2"]       # every channel, mixed to mono here
            run_ffmpeg(["-i", path, "-vn", "-map", "0:a:0", *layout, "-ar", str(AUDIO_RATE_HZ),
                        "-c:a", "pcm_f32le", "-f", "wav", converted], source=path)
            self._file = soundfile.SoundFile(converted)
        self._weights = None
        if self._file is not None:
            self._weights = self._check_whole_file()
        self.count = self._file.frames if self._file is not None else len(self._wav)
        if self.count == 0:
            self.close()
            raise MediaError(f"{path} has no audio samples: give a file with a speech track")

    def read(self, start: int, stop: int) -> np.ndarray:
        if self._wav is not None:
            return self._wav[start:stop]
        self._file.seek(start)
        data = self._file.read(stop - start, dtype="float32", always_2d=True)
        if self._weights is None:
            mono = data.mean(axis=1)
        elif np.count_nonzero(self._weights) == 1:
            mono = data[:, int(np.flatnonzero(self._weights)[0])]
        else:
            mono = data.astype(np.float64) @ self._weights
        return np.ascontiguousarray(mono, dtype=np.float32)

    def _check_whole_file(self) -> Optional[np.ndarray]:
        """One pass over a file read in place, before any frame is made, when its samples can be non-finite
        (float) or its channels can cancel or need a layout's mix (more than one): SampleCheck's checks, block
        by block, then ``mono_weights`` (None: a mono file, read as it is)."""
        if self._file.channels < 2 and self._file.subtype not in ("FLOAT", "DOUBLE"):
            return None
        check = SampleCheck(self.path, self._file.channels, AUDIO_RATE_HZ)
        try:
            for block in self._file.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                check.add(block)
        except MediaError:
            self.close()
            raise
        self._file.seek(0)
        return mono_weights(check, channel_names(self.path)) if self._file.channels > 1 else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def feature_count(num_samples: int) -> int:
    """Rows of :func:`talklip_features` for ``num_samples`` 16 kHz samples."""
    fbank = 1 if num_samples <= FBANK_WINDOW else 1 + math.ceil((num_samples - FBANK_WINDOW) / FBANK_HOP)
    return -(-fbank // STACK_ORDER)


def _logfbank():
    """python_speech_features' logfbank, imported when first asked for (it imports scipy.fftpack, 0.2 s): a
    dub computes its first features on the thread that encodes the speech's first window, beside the
    face search, not before it."""
    from python_speech_features import logfbank
    return logfbank


def talklip_feature_rows(samples: SpeechSamples, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``talklip_features`` of the whole file, computed from the samples they
    need (and the one before, for the pre-emphasis): the same numbers, for any range."""
    frames = 1 if samples.count <= FBANK_WINDOW else 1 + math.ceil((samples.count - FBANK_WINDOW) / FBANK_HOP)
    first, last = STACK_ORDER * start, min(STACK_ORDER * stop, frames)
    begin = FBANK_HOP * first
    end = min(samples.count, FBANK_HOP * (last - 1) + FBANK_WINDOW)
    x = samples.read(max(0, begin - 1), end).astype(np.float64) * INT16_SCALE
    emphasised = x[1:] - PREEMPHASIS * x[:-1] if begin > 0 else np.append(x[0], x[1:] - PREEMPHASIS * x[:-1])
    fbank = _logfbank()(emphasised, samplerate=AUDIO_RATE_HZ, nfilt=N_FILTERBANKS, preemph=0).astype(np.float32)
    stacked = torch.from_numpy(stack_frames(fbank))
    with torch.no_grad():
        return F.layer_norm(stacked, stacked.shape[1:]).numpy()


def save_wav(path: str, wav: np.ndarray, rate: int = AUDIO_RATE_HZ) -> None:
    """Write mono float [-1, 1] or int16 samples as 16-bit PCM WAV, atomically."""
    import soundfile
    if wav.dtype != np.int16:
        wav = float_to_int16(wav)
    with atomic_output(path) as tmp:
        soundfile.write(tmp, wav, rate, subtype="PCM_16", format="WAV")


def float_to_int16(wav: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to int16, rounded and clipped."""
    return np.clip(np.round(np.asarray(wav, np.float64) * INT16_SCALE), -32768, 32767).astype(np.int16)


def stack_frames(feats: np.ndarray, stack_order: int = STACK_ORDER) -> np.ndarray:
    """(T, F) -> (ceil(T / k), F * k): k consecutive frames concatenated, zero rows padded at the end."""
    num, dim = feats.shape
    remainder = (-num) % stack_order
    if remainder:
        feats = np.concatenate([feats, np.zeros((remainder, dim), feats.dtype)], axis=0)
    return feats.reshape(-1, stack_order * dim)


def talklip_features(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """TalkLip's audio-encoder input for a whole utterance.

    wav: (T,) int16 samples, or float samples in [-1, 1] (scaled to the int16 range, as the
    original reads 16-bit WAV files); resampled to 16 kHz first if ``sample_rate`` differs.
    Returns: (ceil(T / 640), 104) float32 at 25 Hz, layer-normalised over the 104 features.
    """
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"talklip_features expects mono (T,) samples, got shape {wav.shape}")
    if np.issubdtype(wav.dtype, np.floating):
        samples = wav.astype(np.float64) * INT16_SCALE
    else:
        samples = wav.astype(np.float64)
    samples = resample(samples, sample_rate, AUDIO_RATE_HZ)
    fbank = _logfbank()(samples, samplerate=AUDIO_RATE_HZ, nfilt=N_FILTERBANKS).astype(np.float32)
    stacked = torch.from_numpy(stack_frames(fbank))
    with torch.no_grad():
        normed = F.layer_norm(stacked, stacked.shape[1:])
    return normed.numpy()


def audio_visual_align(audio_feats: Array, num_frames: int, mode: str = "center") -> Array:
    """Make ``audio_feats`` (T_a, D) exactly ``num_frames`` long.

    Shorter audio is padded with zero rows at the end. Longer audio is cut: ``mode="center"``
    removes the excess evenly from both ends (the original ``inf_test.py``), ``mode="end"``
    removes it from the end (the original ``train.py``).
    """
    diff = len(audio_feats) - num_frames
    if diff < 0:
        if isinstance(audio_feats, torch.Tensor):
            pad = audio_feats.new_zeros((-diff, audio_feats.shape[-1]))
            return torch.cat([audio_feats, pad])
        return np.concatenate([audio_feats, np.zeros((-diff, audio_feats.shape[-1]), audio_feats.dtype)])
    if diff == 0:
        return audio_feats
    if mode == "center":
        left = diff // 2
        return audio_feats[left: left + num_frames]
    if mode == "end":
        return audio_feats[:num_frames]
    raise ValueError(f"mode must be 'center' or 'end', got {mode!r}")
