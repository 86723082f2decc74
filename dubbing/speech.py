"""The new speech through the generator's audio encoder, in one windowing path.

Up to ``window`` feature rows (60 s) the transformer sees the whole utterance, as in the original;
longer speech runs in windows of ``window`` rows overlapping by ``overlap`` on each side, keeping each
window's centre, so memory stays bounded. ``Speech`` encodes a window when a frame first asks for one of
its rows: a dub reads its features from the file by range (``Speech.of_samples``); the test protocol
hands it the whole utterance's features (``encode_audio``).
"""
import contextlib
import threading
import time
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from dubbing.options import SynthesisOptions
from models.talklip import TalkLip
from utils.audio import AUDIO_RATE_HZ, FEATURE_RATE_HZ, SpeechSamples, feature_count, talklip_feature_rows
from utils.memory import released_after_use
from utils.pipeline import StageClock

AUDIO_WINDOW_OVERLAP = 150     # audio frames each side of a window that are run but not kept (6 s)


class Speech:
    """The speech's length, and the audio encoder's features for any 25 Hz rows, encoded window by
    window as asked. ``features(start, end)`` gives the (end - start, 104) filterbank rows; with
    ``release`` the encoder's file-backed weights are released after each use (``released_after_use``)."""

    def __init__(self, generator: TalkLip, rows: int, features: Callable[[int, int], np.ndarray], device,
                 window: int, overlap: int = AUDIO_WINDOW_OVERLAP, release: bool = False,
                 clock: Optional[StageClock] = None, dtype: Optional[torch.dtype] = None,
                 duration_s: Optional[float] = None):
        self.generator, self.features, self.device, self.release = generator, features, device, release
        self.dtype = dtype                 # autocast of the encoder (the dub's --precision); None: fp32
        self.clock = clock or StageClock()
        self.rows = rows
        self.duration_s = rows / FEATURE_RATE_HZ if duration_s is None else duration_s
        self.window, self.overlap = window, overlap
        self.step = self.rows if self.rows <= self.window else self.window - 2 * overlap
        if self.step <= 0:
            raise ValueError(f"audio_window ({self.window}) must exceed twice the overlap ({overlap})")
        self._cache: Dict[int, torch.Tensor] = {}     # window number -> the rows it keeps
        self._early: Optional[Tuple[threading.Thread, list]] = None    # the first window, encoded ahead

    @classmethod
    def of_samples(cls, generator: TalkLip, samples: SpeechSamples, opts: SynthesisOptions,
                   clock: StageClock) -> "Speech":
        """The speech of a dub: features read from ``samples`` by range, windows of ``opts.audio_window``."""
        return cls(generator, feature_count(samples.count), lambda a, b: talklip_feature_rows(samples, a, b),
                   opts.device, opts.audio_window, release=opts.release_memory, clock=clock, dtype=opts.dtype,
                   duration_s=samples.count / AUDIO_RATE_HZ)

    def encode_first_window_ahead(self) -> None:
        """Start encoding window 0 on a thread of its own, while the caller looks for the face (the dub's
        first frame needs both); ``embeddings`` waits for it. Errors reach the caller there."""
        box: list = []

        def run():
            try:
                box.append(self._encode(0))
            except BaseException as err:         # handed to the thread that asks
                box.append(err)
        thread = threading.Thread(target=run, name="first audio window", daemon=True)
        thread.start()
        self._early = (thread, box)

    def close(self) -> None:
        """Wait for the first window's thread, if it is still running (a dub refused before its first frame
        must not leave it behind: a daemon thread inside torch or an import when the interpreter exits
        aborts the process)."""
        if self._early is not None:
            self._early[0].join()
            self._early = None

    def frames_at(self, fps: float) -> int:
        """How many video frames at ``fps`` it lasts (at least one): the dub's length."""
        return max(1, int(round(self.duration_s * fps)))

    def embeddings(self, rows: np.ndarray) -> torch.Tensor:
        """(len(rows), C) audio-encoder features of ``rows`` (25 Hz feature rows)."""
        if self._early is not None:
            thread, box = self._early
            thread.join()
            self._early = None
            if isinstance(box[0], BaseException):
                raise box[0]
            self._cache[0] = box[0]
        windows = rows // self.step
        self._cache = {k: v for k, v in self._cache.items() if k >= windows.min()}   # frames move forward
        for window in np.unique(windows):
            if int(window) not in self._cache:
                self._cache[int(window)] = self._encode(int(window))
        return torch.cat([self._cache[int(w)][rows[windows == w] - int(w) * self.step] for w in np.unique(windows)])

    def _encode(self, window: int) -> torch.Tensor:
        started = time.perf_counter()
        keep_start, keep_end = window * self.step, min(self.rows, (window + 1) * self.step)
        start, end = audio_window(keep_start, keep_end, self.rows, self.window, self.overlap)
        feats = torch.from_numpy(np.ascontiguousarray(self.features(start, end))).float()
        encoder = self.generator.audio_encoder if self.release else None
        # no cast cache: each weight's bf16 copy lives for its one use, not the whole window (the mapped
        # fp32 encoder would otherwise gain ~200 MB of copies while it runs)
        autocast = (torch.autocast(torch.device(self.device).type, dtype=self.dtype, cache_enabled=False)
                    if self.dtype else contextlib.nullcontext())
        with torch.no_grad(), released_after_use(encoder), autocast:
            out, _ = self.generator.encode_audio(feats.T[None].to(self.device))
        self.clock.add("audio", time.perf_counter() - started)
        return out[keep_start - start: keep_end - start, 0].float().cpu()


def encode_audio(generator: TalkLip, feats: np.ndarray, device, max_frames: int = 1500,
                 overlap: int = AUDIO_WINDOW_OVERLAP) -> torch.Tensor:
    """Audio-encoder features (T, C) for a whole utterance of (T, 104) features (``Speech``'s windows)."""
    speech = Speech(generator, len(feats), lambda a, b: feats[a:b], device, max_frames, overlap)
    return speech.embeddings(np.arange(len(feats)))


def audio_window(keep_start: int, keep_end: int, total: int, max_frames: int, overlap: int) -> Tuple[int, int]:
    """[start, end) of the rows the encoder runs to give rows [keep_start, keep_end) of ``total``:
    ``overlap`` rows each side where there are some, ``max_frames`` rows in all where the
    utterance has them (the whole utterance when it is no longer)."""
    if total <= max_frames:
        return 0, total
    start = max(0, keep_start - overlap)
    end = min(total, max(keep_end + overlap, start + max_frames))
    return max(0, min(start, end - max_frames)), end
