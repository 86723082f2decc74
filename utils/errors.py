"""Error types for people, and the one place that turns them into a one-line exit.

Library code raises; only scripts exit. Every message names the file concerned and
what to do about it, so a researcher can act on it without reading a traceback.
"""
import signal
import sys


class Terminated(BaseException):
    """SIGTERM (sent by ``timeout``, ``docker stop``, SLURM) or SIGHUP (the terminal or ssh session closed),
    raised in the main thread so that it unwinds like Ctrl-C: temporary outputs are removed, background
    threads and ffmpeg stopped. ``exit_status`` is the shell's for the signal (143, 129)."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def _on_sigterm(signum, frame):
    raise Terminated(signum)


def install_stop_signals() -> None:
    """SIGTERM, and SIGHUP unless the process was started to ignore it (``nohup``), raise ``Terminated``."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _on_sigterm)


class TalkLipError(Exception):
    """A problem with the user's input or environment, phrased as one line."""


class MediaError(TalkLipError):
    """A video or audio file is missing, corrupt or lacks the stream we need."""


class CheckpointError(TalkLipError):
    """A weights file is missing, unsafe, or does not match the model."""


class NoFaceError(TalkLipError):
    """No face was found in any frame of a video."""


def say_on_stderr(text: str) -> None:
    """The default way library code says a one-line note or warning: a line on stderr."""
    print(text, file=sys.stderr)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, prefixed with its type for non-TalkLip errors."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, TalkLipError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_cli(main, args) -> None:
    """Run a script's ``main(args)``; a TalkLipError becomes 'error: ...' on stderr and exit 2.

    ``main`` may return an int exit status (None means 0).
    """
    install_stop_signals()
    try:
        status = main(args)
    except TalkLipError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated as stop:
        print("terminated" if stop.signum == signal.SIGTERM else "hung up: stopped", file=sys.stderr)
        sys.exit(stop.exit_status)
    sys.exit(int(status or 0))
