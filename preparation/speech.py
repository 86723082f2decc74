"""Speech for the synthetic corpus: espeak-ng when installed, else a small formant synthesiser.

The built-in synthesiser is not meant to be intelligible; it gives speech-like audio (voiced
syllables with formants and pitch, pauses between words) whose loudness envelope drives the
synthetic mouth, so audio and lip motion are truly in sync.
"""
import os
import shutil
import subprocess
import tempfile

import numpy as np
from scipy.signal import lfilter

from utils.audio import AUDIO_RATE_HZ, load_audio

# (F1, F2, F3) in Hz for a few vowels, used by the built-in synthesiser
VOWEL_FORMANTS = {
    "a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010),
    "o": (570, 840, 2410), "u": (300, 870, 2240), "y": (440, 1020, 2240),
}


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak_espeak(text: str, speed_wpm: int = 150, voice: str = "en-us") -> np.ndarray:
    """Synthesise ``text`` with espeak-ng: (T,) float32 at 16 kHz."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "speech.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-w", path, text],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return load_audio(path)


def _resonator(signal: np.ndarray, freq: float, bandwidth: float, rate: int) -> np.ndarray:
    radius = np.exp(-np.pi * bandwidth / rate)
    theta = 2 * np.pi * freq / rate
    a = [1.0, -2 * radius * np.cos(theta), radius ** 2]
    return lfilter([1 - radius], a, signal)


def speak_builtin(text: str, rng: np.random.Generator, rate: int = AUDIO_RATE_HZ) -> np.ndarray:
    """Formant-synthesised syllables, one per vowel group of each word: (T,) float32 at ``rate``."""
    pieces = []
    pitch = rng.uniform(105, 150)
    for word in text.lower().split():
        vowels = [ch for ch in word if ch in VOWEL_FORMANTS] or ["a"]
        groups = [v for i, v in enumerate(vowels) if i == 0 or vowels[i - 1] != v]
        for vowel in groups:
            dur = rng.uniform(0.12, 0.22)
            n = int(dur * rate)
            t = np.arange(n) / rate
            f0 = pitch * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 4) * t))
            phase = np.cumsum(f0) / rate
            source = (phase % 1.0) - 0.5                      # sawtooth glottal source
            voiced = sum(_resonator(source, f, 60 + 0.05 * f, rate) for f in VOWEL_FORMANTS[vowel])
            envelope = np.sin(np.pi * np.arange(n) / n) ** 0.7
            burst = rng.standard_normal(int(0.03 * rate)) * 0.05   # consonant-like onset
            pieces += [burst, voiced * envelope]
        pieces.append(np.zeros(int(rng.uniform(0.06, 0.14) * rate)))
    wav = np.concatenate(pieces)
    return (0.5 * wav / (np.abs(wav).max() + 1e-9)).astype(np.float32)


def speak(text: str, rng: np.random.Generator, use_espeak: bool = True) -> np.ndarray:
    """Speech for ``text`` at 16 kHz, peak-normalised to 0.5."""
    if use_espeak and espeak_available():
        wav = speak_espeak(text, speed_wpm=int(rng.integers(140, 170)))
        return (0.5 * wav / (np.abs(wav).max() + 1e-9)).astype(np.float32)
    return speak_builtin(text, rng)


def mouth_opening(wav: np.ndarray, num_frames: int, fps: float, rate: int = AUDIO_RATE_HZ) -> np.ndarray:
    """Per-frame mouth opening in [0, 1] from the speech loudness around each frame's time."""
    half = int(0.03 * rate)
    rms = np.empty(num_frames)
    for i in range(num_frames):
        centre = int((i + 0.5) / fps * rate)
        window = wav[max(0, centre - half): centre + half]
        rms[i] = np.sqrt(np.mean(window.astype(np.float64) ** 2)) if window.size else 0.0
    level = np.percentile(rms, 95) + 1e-9
    opening = np.clip(rms / level, 0, 1)
    opening[opening < 0.08] = 0.0
    return opening.astype(np.float32)


def mouth_width(wav: np.ndarray, opening: np.ndarray, fps: float, rate: int = AUDIO_RATE_HZ,
                narrowest: float = 0.8, widest: float = 1.2) -> np.ndarray:
    """Per-frame mouth width factor from the sound: the share of energy above 1.5 kHz (high for spread
    vowels like /i/ and for /s/, low for rounded /o/, /u/), ranked within the clip onto
    [narrowest, widest]; 1 where the mouth is closed. So each sound has its own mouth shape."""
    half = int(0.03 * rate)
    freqs = np.fft.rfftfreq(2 * half, 1.0 / rate)
    band, high = (freqs >= 300) & (freqs <= 5000), freqs >= 1500
    brightness = np.zeros(len(opening))
    for i in range(len(opening)):
        centre = int((i + 0.5) / fps * rate)
        window = wav[max(0, centre - half): centre + half].astype(np.float64)
        if len(window) < 2 * half or opening[i] <= 0:
            continue
        power = np.abs(np.fft.rfft(window * np.hanning(len(window)))) ** 2
        brightness[i] = power[band & high].sum() / (power[band].sum() + 1e-12)
    width = np.ones(len(opening))
    open_frames = np.flatnonzero(opening > 0)
    if len(open_frames) > 1:
        ranks = np.argsort(np.argsort(brightness[open_frames]))
        width[open_frames] = narrowest + (widest - narrowest) * ranks / (len(open_frames) - 1)
    return width.astype(np.float32)
