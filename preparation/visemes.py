"""A readable synthetic language: a GRID-like grammar, its words' phonemes, speech rendered phoneme
by phoneme (so every phoneme's start and end is known exactly), and the mouth shape of each frame.

- Grammar: ``SLOTS`` (verb, colour, preposition, number, adverb), four words each; the words of a
  slot differ in their viseme sequences, so a lip reader can tell them apart from the mouth alone
  (homophenes like p/b/m only ever meet across slots).
- Phonemes: ARPAbet, from the hand-written ``LEXICON``. ``speak_phonemes`` renders them with a small
  source-filter synthesiser: vowels and glides by formants, fricatives by band-passed noise, stops by
  a closure and a burst, nasals by a low resonance. The audio carries the phoneme classes the mouth
  shows, and the timing is exact (no alignment step).
- Visemes: ``VISEMES`` (12 classes, the common set: closed p/b/m, labiodental f/v, dental th, ...),
  each a target ``MouthShape``; ``mouth_track`` samples the shape at each frame's centre, easing from
  target to target (coarticulation), and gives each frame the viseme of the phoneme it falls in.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

from utils.audio import AUDIO_RATE_HZ

SLOTS: Tuple[Tuple[str, ...], ...] = (
    ("MOVE", "FETCH", "SEE", "WIPE"),          # verb
    ("BLUE", "RED", "WHITE", "GREEN"),         # colour
    ("AT", "BY", "OFF", "WITH"),               # preposition
    ("FIVE", "TWO", "THREE", "NINE"),          # number
    ("NOW", "PLEASE", "SOON", "AGAIN"),        # adverb
)

LEXICON: Dict[str, Tuple[str, ...]] = {
    "MOVE": ("M", "UW", "V"), "FETCH": ("F", "EH", "CH"), "SEE": ("S", "IY"), "WIPE": ("W", "AY", "P"),
    "BLUE": ("B", "L", "UW"), "RED": ("R", "EH", "D"), "WHITE": ("W", "AY", "T"), "GREEN": ("G", "R", "IY", "N"),
    "AT": ("AE", "T"), "BY": ("B", "AY"), "OFF": ("AO", "F"), "WITH": ("W", "IH", "TH"),
    "FIVE": ("F", "AY", "V"), "TWO": ("T", "UW"), "THREE": ("TH", "R", "IY"), "NINE": ("N", "AY", "N"),
    "NOW": ("N", "AW"), "PLEASE": ("P", "L", "IY", "Z"), "SOON": ("S", "UW", "N"), "AGAIN": ("AH", "G", "EH", "N"),
}


@dataclass(frozen=True)
class MouthShape:
    """A mouth pose: ``opening`` in [0, 1], ``width`` (x the neutral width), ``roundness`` in [0, 1]
    (lips pushed forward into an O), ``teeth`` / ``tongue`` / ``tuck`` (lower lip under the upper
    teeth) in [0, 1] as how visible they are."""
    opening: float
    width: float = 1.0
    roundness: float = 0.0
    teeth: float = 0.0
    tongue: float = 0.0
    tuck: float = 0.0


# (name, phonemes, target shape); the index is the viseme id stored in gt/*.npz
VISEMES: Tuple[Tuple[str, Tuple[str, ...], MouthShape], ...] = (
    ("silence", ("SIL",), MouthShape(0.0)),
    ("closed", ("P", "B", "M"), MouthShape(0.0, 0.95)),
    ("labiodental", ("F", "V"), MouthShape(0.12, 1.0, teeth=1.0, tuck=1.0)),
    ("dental", ("TH", "DH"), MouthShape(0.28, 1.0, teeth=1.0, tongue=1.0)),
    ("alveolar", ("T", "D", "N", "S", "Z", "L"), MouthShape(0.22, 1.05, teeth=1.0)),
    ("postalveolar", ("SH", "ZH", "CH", "JH"), MouthShape(0.3, 0.8, roundness=0.6, teeth=1.0)),
    ("velar", ("K", "G", "NG", "HH"), MouthShape(0.38, 1.0)),
    ("rounded", ("W", "UW", "UH", "OW", "AO"), MouthShape(0.42, 0.62, roundness=1.0)),
    ("open", ("AA", "AE", "AH"), MouthShape(1.0, 1.05)),
    ("mid", ("EH", "ER"), MouthShape(0.6, 1.15, teeth=0.5)),
    ("spread", ("IY", "IH", "Y"), MouthShape(0.3, 1.3, teeth=1.0)),
    ("r", ("R",), MouthShape(0.32, 0.85, roundness=0.5)),
)
VISEME_OF: Dict[str, int] = {ph: i for i, (_, phones, _) in enumerate(VISEMES) for ph in phones}
DIPHTHONGS = {"AY": ("AA", "IY"), "AW": ("AA", "UW"), "EY": ("EH", "IY"), "OW": ("AO", "UW"), "OY": ("AO", "IY")}

# (F1, F2, F3) in Hz
FORMANTS = {
    "AA": (730, 1090, 2440), "AE": (660, 1720, 2410), "AH": (520, 1190, 2390), "AO": (570, 840, 2410),
    "EH": (530, 1840, 2480), "ER": (490, 1350, 1690), "IH": (390, 1990, 2550), "IY": (270, 2290, 3010),
    "UH": (440, 1020, 2240), "UW": (300, 870, 2240),
    "L": (360, 1300, 2700), "R": (420, 1300, 1600), "W": (300, 610, 2200), "Y": (260, 2070, 3000),
    "M": (250, 1000, 2200), "N": (250, 1500, 2500), "NG": (250, 2000, 2700),
}
STOPS = {"P": 900, "B": 900, "T": 4000, "D": 4000, "K": 2000, "G": 2000, "CH": 3200, "JH": 3200}   # burst centre
FRICATIVES = {"F": (1500, 7000, 0.25), "V": (1500, 7000, 0.2), "TH": (1500, 7000, 0.2), "DH": (1500, 7000, 0.15),
              "S": (4000, 7500, 1.0), "Z": (4000, 7500, 0.7), "SH": (2000, 5000, 1.0), "ZH": (2000, 5000, 0.7),
              "HH": (500, 4000, 0.3)}                                             # band (Hz), level
VOICED = {"B", "D", "G", "JH", "V", "DH", "Z", "ZH"}


@dataclass(frozen=True)
class Segment:
    """One phoneme (or silence, ``SIL``) of a rendered utterance, in seconds."""
    phone: str
    start: float
    end: float


def sentence(rng: np.random.Generator, slots: Sequence[Sequence[str]] = SLOTS) -> List[str]:
    """One word from each slot."""
    return [slot[int(rng.integers(len(slot)))] for slot in slots]


def _duration(phone: str, rng: np.random.Generator) -> float:
    base = (0.2 if phone in DIPHTHONGS else 0.13 if phone in FORMANTS and phone not in ("L", "R", "W", "Y", "M", "N", "NG")
            else 0.09 if phone in STOPS or phone in FRICATIVES else 0.07)
    return base * rng.uniform(0.85, 1.15)


def _voiced(n: int, f0: np.ndarray, formants: Sequence[Tuple[float, float, float]], rate: int) -> np.ndarray:
    """A glottal sawtooth at pitch ``f0`` (n,) through three resonators per formant set; several sets
    (a diphthong's start and end) are cross-faded over the segment."""
    phase = np.cumsum(f0) / rate
    source = (phase % 1.0) - 0.5
    outs = []
    for f1_f2_f3 in formants:
        out = np.zeros(n)
        for freq in f1_f2_f3:
            radius = np.exp(-np.pi * (60 + 0.05 * freq) / rate)
            theta = 2 * np.pi * freq / rate
            out += lfilter([1 - radius], [1.0, -2 * radius * np.cos(theta), radius ** 2], source)
        outs.append(out)
    if len(outs) == 1:
        return outs[0]
    fade = np.linspace(0, 1, n)
    return outs[0] * (1 - fade) + outs[1] * fade


def _noise(n: int, low: float, high: float, rng: np.random.Generator, rate: int) -> np.ndarray:
    sos = butter(4, [low, min(high, rate / 2 - 100)], btype="band", fs=rate, output="sos")
    return sosfilt(sos, rng.standard_normal(n))


def _render(phone: str, n: int, f0: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    """(n,) samples of one phoneme at unit-ish level, with 5 ms fades."""
    if phone in DIPHTHONGS:
        wav = _voiced(n, f0, [FORMANTS[p] for p in DIPHTHONGS[phone]], rate)
    elif phone in ("M", "N", "NG"):
        wav = 0.35 * _voiced(n, f0, [FORMANTS[phone]], rate)
    elif phone in FORMANTS:
        wav = (0.6 if phone in ("L", "R", "W", "Y") else 1.0) * _voiced(n, f0, [FORMANTS[phone]], rate)
    elif phone in FRICATIVES:
        low, high, level = FRICATIVES[phone]
        wav = 0.25 * level * _noise(n, low, high, rng, rate) / 0.1
        if phone in VOICED:
            wav += 0.2 * _voiced(n, f0, [(250, 1000, 2500)], rate)
    elif phone in STOPS:
        closure = int(n * 0.7)
        burst = n - closure
        wav = np.zeros(n)
        if phone in VOICED:                                   # a voicing bar under the closure
            wav[:closure] = 0.08 * _voiced(closure, f0[:closure], [(200, 800, 2400)], rate)
        centre = STOPS[phone]
        wav[closure:] = 0.6 * _noise(burst, centre * 0.6, centre * 1.6, rng, rate) / 0.1
        if phone in ("CH", "JH"):                             # an affricate's frication
            wav[closure:] = 0.6 * _noise(burst, 2000, 5000, rng, rate) / 0.1
    else:
        wav = np.zeros(n)
    ramp = min(n // 2, int(0.005 * rate))
    if ramp:
        wav[:ramp] *= np.linspace(0, 1, ramp)
        wav[-ramp:] *= np.linspace(1, 0, ramp)
    return wav


def speak_phonemes(words: Sequence[str], rng: np.random.Generator, lead_s: float = 0.3,
                   rate: int = AUDIO_RATE_HZ) -> Tuple[np.ndarray, List[Segment]]:
    """Render ``words`` (LEXICON keys) with ``lead_s`` of silence before and after and a short pause
    between words: ((T,) float32 peak 0.5 at ``rate``, the phoneme segments in order, silences included)."""
    pitch = rng.uniform(105, 150)
    tempo = rng.uniform(0.9, 1.1)
    pieces: List[np.ndarray] = [np.zeros(int(lead_s * rate))]
    segments = [Segment("SIL", 0.0, lead_s)]
    clock = lead_s
    for k, word in enumerate(words):
        for phone in LEXICON[word]:
            n = int(_duration(phone, rng) * tempo * rate)
            t = np.arange(n) / rate
            f0 = pitch * (1 + 0.06 * np.sin(2 * np.pi * 3 * (t + clock)))
            pieces.append(_render(phone, n, f0, rng, rate))
            segments.append(Segment(phone, clock, clock + n / rate))
            clock += n / rate
        gap = lead_s if k == len(words) - 1 else rng.uniform(0.04, 0.1)
        pieces.append(np.zeros(int(gap * rate)))
        segments.append(Segment("SIL", clock, clock + int(gap * rate) / rate))
        clock += int(gap * rate) / rate
    wav = np.concatenate(pieces)
    return (0.5 * wav / (np.abs(wav).max() + 1e-9)).astype(np.float32), segments


def _shape_vector(shape: MouthShape) -> np.ndarray:
    return np.array([shape.opening, shape.width, shape.roundness, shape.teeth, shape.tongue, shape.tuck])


SHAPE_FIELDS = ("opening", "width", "roundness", "teeth", "tongue", "tuck")
EASE_S = 0.03                         # the coarticulation time of mouth_track (a speaker's style scales it)


def mouth_track(segments: Sequence[Segment], num_frames: int, fps: float,
                ease_s: float = EASE_S) -> Tuple[np.ndarray, np.ndarray]:
    """Per-frame mouth shapes (num_frames, 6: ``SHAPE_FIELDS``) and viseme ids (num_frames,), sampled at
    each frame's centre. Each phoneme holds its viseme's target over its middle 60% (a diphthong moves
    from its first vowel's to its second's); between holds the shape eases linearly, then a Gaussian
    of ``ease_s`` smooths the corners (coarticulation). A closure (p/b/m) is held, so a frame whose centre
    falls in one shows closed lips."""
    times, targets = [], []
    for seg in segments:
        length = seg.end - seg.start
        parts = DIPHTHONGS.get(seg.phone, (seg.phone, seg.phone))
        for share, phone in ((0.2, parts[0]), (0.8, parts[1])):
            times.append(seg.start + share * length)
            targets.append(_shape_vector(VISEMES[VISEME_OF.get(phone, 0)][2]))
    times, targets = np.asarray(times), np.asarray(targets)
    fine_rate = 1000.0
    fine_t = np.arange(0.0, num_frames / fps + 0.1, 1.0 / fine_rate)
    fine = np.stack([np.interp(fine_t, times, targets[:, j]) for j in range(targets.shape[1])], axis=1)
    sigma = ease_s * fine_rate
    kernel = np.exp(-0.5 * (np.arange(-3 * sigma, 3 * sigma + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(fine, ((len(kernel) // 2, len(kernel) // 2), (0, 0)), mode="edge")
    smooth = np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(fine.shape[1])], axis=1)
    centres = (np.arange(num_frames) + 0.5) / fps
    shapes = smooth[np.clip(np.round(centres * fine_rate).astype(int), 0, len(smooth) - 1)]
    for seg in segments:                                   # closures and silences are held exactly
        if seg.phone in ("P", "B", "M", "SIL"):
            length = seg.end - seg.start
            inside = (centres >= seg.start + 0.2 * length) & (centres <= seg.end - 0.2 * length)
            shapes[inside, 0] = 0.0
    ids = np.zeros(num_frames, np.int64)
    for seg in segments:
        inside = (centres >= seg.start) & (centres < seg.end)
        phone = DIPHTHONGS.get(seg.phone, (seg.phone,))[0]
        ids[inside] = VISEME_OF.get(phone, 0)
    return shapes.astype(np.float32), ids
