"""The ffmpeg binary that ships inside the imageio-ffmpeg wheel; no system ffmpeg needed."""
import functools
import os
import subprocess
import tempfile
from typing import List

from utils.errors import MediaError, TalkLipError


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg executable."""
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # the wheel is missing or its binary is not there
        raise TalkLipError(f"no ffmpeg binary found ({exc}): pip install -r requirement.txt") from exc


def last_error_line(stderr: bytes) -> str:
    """The most informative line of ffmpeg's stderr (its last non-empty line)."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "ffmpeg failed"


def _under_tmp(folder: str) -> bool:
    """``folder`` lies in the temporary folder (TMPDIR), where conversions are written."""
    tmp = os.path.realpath(tempfile.gettempdir())
    return os.path.realpath(folder) == tmp or os.path.realpath(folder).startswith(tmp + os.sep)


def run_ffmpeg(args: List[str], source: str, stdout=subprocess.DEVNULL) -> bytes:
    """Run ffmpeg with ``args`` (without the executable); raise MediaError naming ``source``."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"] + args
    proc = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE)
    if proc.returncode != 0 and b"0:a:0" in proc.stderr and b"matches no streams" in proc.stderr:
        raise MediaError(f"{source} has no audio stream: give a file with a speech track")
    if proc.returncode != 0 and b"No space left on device" in proc.stderr:
        folder = os.path.dirname(os.path.abspath(args[-1])) if args and args[-1] != "-" else "the output folder"
        raise MediaError(f"no space left in {folder} while ffmpeg wrote what it made of {source}: free space there"
                         + (" or point TMPDIR at a folder with room" if _under_tmp(folder) else " or choose another folder"))
    if proc.returncode != 0:
        raise MediaError(f"ffmpeg could not process {source}: {last_error_line(proc.stderr)}; "
                         f"check the file plays, or re-encode it")
    return proc.stdout if stdout == subprocess.PIPE else b""
