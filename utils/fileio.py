"""File lists, shards and atomic writes.

Outputs are always written to a temporary file in the destination folder and renamed
into place, so an interrupted run never leaves a half-written file under a final name. Each
temporary names its writer (host and process id), so runs writing the same output side by side
never touch each other's: the last to finish wins, complete; a temporary is removed as stale only
when its writer's process is gone.
"""
import collections
import contextlib
import math
import os
import socket
import uuid
import zlib
from typing import Iterator, List, Optional, Sequence, Tuple

from utils.errors import TalkLipError, say_on_stderr

TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path`` (same extension); rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise TalkLipError(f"cannot create the folder {folder} for {path} ({err.strerror}: a file in the way?): "
                           f"choose another output path") from None
    remove_stale_temps(path)       # left by an earlier run of this writer that was killed
    base = os.path.basename(path)
    stem, ext = os.path.splitext(base)
    tmp = os.path.join(folder, f".{stem}{TMP_MARK}{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{ext}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _host_tag() -> str:
    """8 hex digits naming this machine, so a process id is only compared on the host that owns it."""
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _writer_gone(name: str, prefix: str) -> bool:
    """Whether the writer named in temporary ``name`` (``<prefix><host>-<pid>-<random><ext>``) has exited.
    A temporary without a named writer (written before writers were named) counts as stale; another
    host's is kept, since its process cannot be looked up here."""
    parts = name[len(prefix):].split("-")
    if len(parts) < 3:
        return True
    host, pid = parts[0], parts[1]
    if host != _host_tag() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:           # alive, owned by another user
        return False
    return False


def remove_stale_temps(path: str) -> int:
    """Delete temporaries that an interrupted writer of ``path`` left beside it (its process is gone);
    a running writer's temporary is left alone. Returns how many were removed."""
    folder = os.path.dirname(os.path.abspath(path))
    stem, ext = os.path.splitext(os.path.basename(path))
    prefix = f".{stem}{TMP_MARK}"
    if not os.path.isdir(folder):
        return 0
    removed = 0
    for name in os.listdir(folder):
        if name.startswith(prefix) and name.endswith(ext) and _writer_gone(name, prefix):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed


def refuse_input_as_output(out: str, inputs: Sequence[str], what: str = "output") -> None:
    """One line when ``out`` is one of ``inputs`` (the same file by any path): writing it would destroy it."""
    for path in inputs:
        if os.path.exists(path) and os.path.realpath(path) == os.path.realpath(out):
            raise TalkLipError(f"{what} {out} is the input {path}: writing there would destroy it; "
                               f"choose another output path")


_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def read_text(path: str, what: str = "text file") -> str:
    """A text file as the user saved it: UTF-8 (a byte-order mark dropped), or UTF-16 with its byte-order mark
    (Windows Notepad's 'Unicode'). Other bytes, and NUL characters (UTF-16 saved without its mark, or not
    text at all), are refused in one line naming the file, the line and the fix."""
    with open(path, "rb") as handle:
        raw = handle.read()
    encoding = next((name for mark, name in _BOMS if raw.startswith(mark)), "utf-8")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise TalkLipError(f"{what} {path} is not {encoding.upper().replace('-SIG', '')} text (line {line}, byte "
                           f"{err.start}): save it as UTF-8") from None
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise TalkLipError(f"{what} {path}, line {line}, holds NUL characters (UTF-16 saved without its byte-order "
                           f"mark, or not a text file): save it as UTF-8")
    return text.lstrip("\ufeff")


def mp4_output(save_path: str, video_path: str) -> str:
    """The .mp4 a dub writes for ``save_path``: itself when it ends in .mp4, else with .mp4 added; a folder
    (ending in '/' or existing as one) gets <folder>/<video name>.mp4."""
    if save_path.endswith(("/", os.sep)) or os.path.isdir(save_path):
        save_path = os.path.join(save_path, os.path.splitext(os.path.basename(video_path))[0])
    return save_path if save_path.lower().endswith(".mp4") else f"{save_path}.mp4"


def read_filelist(path: str, warn=None) -> List[str]:
    """Sample names from an LRS2/LRW-style file list: the first token of each non-empty line. A UTF-8
    byte-order mark (as Windows editors write) is not part of the first name; a line whose first
    character (after spaces) is ``#`` is a comment; a name listed again is read once, where it first
    appears, and ``warn`` (default: a line on stderr) says how many repeats were dropped."""
    if not os.path.isfile(path):
        raise TalkLipError(f"file list {path} does not exist: pass --filelist with a text file of "
                           f"<speaker>/<clip> lines")
    lines = read_text(path, "file list").splitlines()
    listed = [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]
    names = list(dict.fromkeys(listed))
    if len(names) < len(listed):
        repeated = sorted(n for n, count in collections.Counter(listed).items() if count > 1)
        (warn or say_on_stderr)(f"warning: file list {path} names {len(listed) - len(names)} clip(s) again "
                          f"({', '.join(repeated[:3])}{', ...' if len(repeated) > 3 else ''}): each is read once")
    if not names:
        raise TalkLipError(f"file list {path} is empty: it needs one <speaker>/<clip> per line")
    for number, name in enumerate(names, 1):
        parts = name.replace("\\", "/").split("/")
        if os.path.isabs(name) or name.startswith("~") or ".." in parts:
            raise TalkLipError(f"file list {path}, entry {number} ({name!r}) leaves the data folders: "
                               f"names must be relative <speaker>/<clip> paths without '..'")
    return names



def resolve_shard(rank: Optional[int] = None, nshard: Optional[int] = None,
                  environ=os.environ) -> Tuple[int, int]:
    """Return a 0-based (rank, nshard).

    ``rank`` is 1-based as in the original scripts' ``--rank``. Without it, torchrun's
    RANK/WORLD_SIZE or SLURM's SLURM_PROCID/SLURM_NTASKS are used, else a single shard.
    """
    if rank is not None:
        total = 1 if nshard is None else nshard
        if total < 1 or not 1 <= rank <= total:
            raise TalkLipError(f"--rank {rank} is outside 1..{total}: ranks count from 1 to --nshard")
        return rank - 1, total
    for rank_var, size_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in environ and size_var in environ:
            env_rank, env_size = int(environ[rank_var]), int(environ[size_var])
            if nshard is not None and nshard != env_size:
                raise TalkLipError(f"--nshard {nshard} disagrees with {size_var}={env_size}: drop one")
            return env_rank, env_size
    return 0, 1 if nshard is None else nshard


def shard_items(items: Sequence, rank: int, nshard: int) -> list:
    """Contiguous shard ``rank`` (0-based) of ``nshard``, split as the original scripts split."""
    per_shard = math.ceil(len(items) / nshard)
    return list(items[per_shard * rank: per_shard * (rank + 1)])
