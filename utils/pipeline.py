"""Overlapping stages: an iterator run in a background thread, a writer fed by one, and a clock.

Each hand-over is a queue bounded in items, so memory is set by queue sizes, not by the input.
An exception in a background thread is re-raised in the caller with its own message; when the
caller stops early (an exception, Ctrl-C, SIGTERM) the background thread is stopped and joined.
"""
import ctypes
import ctypes.util
import functools
import queue
import threading
import time
from collections import defaultdict
from typing import Iterable, Iterator

_DONE = object()


@functools.lru_cache(maxsize=1)
def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "madvise") else None
    except OSError:                           # not glibc: nothing to do
        return None


def release_free_memory() -> bool:
    """Give the C heap's free pages back to the OS (glibc's ``malloc_trim``); False where there is none.

    Streaming work calls it once per chunk. Frames, detector and generator activations of many
    sizes are allocated and freed in several threads; glibc keeps the holes they leave resident, so
    without this the RSS of a 720p dub crept up ~75 MB per 30 s of video (measured), and a
    five-minute clip peaked ~500 MB above a ten-second one. Its cost (pages faulted in again) was
    within run-to-run noise in a micro-benchmark, trimming after every detector and generator call."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class StageClock:
    """Seconds spent per named stage, summed over threads."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds

    def timed(self, stage: str, iterable: Iterable) -> Iterator:
        """Yield from ``iterable``, counting the time spent producing each item to ``stage``."""
        items = iter(iterable)
        while True:
            started = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                self.add(stage, time.perf_counter() - started)
                return
            self.add(stage, time.perf_counter() - started)
            yield item

    def report(self) -> dict:
        return {stage: round(value, 2) for stage, value in sorted(self.seconds.items())}


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def in_background(iterable: Iterable, maxsize: int, name: str = "producer") -> Iterator:
    """Iterate ``iterable`` in a daemon thread, up to ``maxsize`` items ahead of the caller."""
    q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
    stop = threading.Event()

    def work():
        try:
            for item in iterable:
                if not _put(q, item, stop):
                    return
            _put(q, _DONE, stop)
        except BaseException as err:   # handed to the caller, which re-raises it
            _put(q, _Failure(err), stop)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class BackgroundWriter:
    """``write_batch(frames)`` returns at once; a thread passes the frames to ``writer``.

    Use as a context manager inside the writer's own ``with``: leaving without an exception waits
    for every frame to be written (and re-raises a write error); with an exception the thread is
    stopped without writing the rest.
    """

    def __init__(self, writer, maxsize: int = 4, clock: StageClock = None, stage: str = "encode"):
        self.writer, self.clock, self.stage = writer, clock, stage
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._work, name="writer", daemon=True)

    def _work(self):
        while True:
            item = self._queue.get()
            if item is _DONE or self._stop.is_set():
                return
            started = time.perf_counter()
            try:
                self.writer.write_batch(item)
            except BaseException as err:
                self._error = err
                self._stop.set()
                return
            if self.clock is not None:
                self.clock.add(self.stage, time.perf_counter() - started)

    def write_batch(self, frames) -> None:
        if self._error is not None:
            raise self._error
        if not _put(self._queue, frames, self._stop) and self._error is not None:
            raise self._error

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            if _put(self._queue, _DONE, self._stop):
                self._thread.join()
            if self._error is not None:
                raise self._error
            return False
        self._stop.set()
        while True:                        # unblock a thread waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(_DONE)
        self._thread.join()
        return False
