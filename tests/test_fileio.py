import os

import pytest

from utils.errors import TalkLipError
from utils.fileio import atomic_output, read_filelist, resolve_shard, shard_items


def test_atomic_output_renames_on_success_and_cleans_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_output(str(target)) as tmp:
        assert tmp.endswith(".txt") and os.path.dirname(tmp) == str(target.parent)
        open(tmp, "w").write("ok")
        assert not target.exists()
    assert target.read_text() == "ok"
    with pytest.raises(KeyError):
        with atomic_output(str(target)) as tmp:
            open(tmp, "w").write("half")
            raise KeyError("boom")
    assert target.read_text() == "ok" and os.listdir(target.parent) == ["out.txt"]


def test_shards_cover_every_item_once():
    items = list(range(11))
    for nshard in (1, 2, 3, 4, 11, 13):
        parts = [shard_items(items, r, nshard) for r in range(nshard)]
        assert sum(parts, []) == items


def test_resolve_shard_from_flags_and_launcher_environments():
    assert resolve_shard(None, None, environ={}) == (0, 1)
    assert resolve_shard(2, 3, environ={}) == (1, 3)
    assert resolve_shard(None, None, environ={"RANK": "1", "WORLD_SIZE": "4"}) == (1, 4)
    assert resolve_shard(None, None, environ={"SLURM_PROCID": "2", "SLURM_NTASKS": "3"}) == (2, 3)
    with pytest.raises(TalkLipError, match="--rank 4"):
        resolve_shard(4, 3, environ={})


def test_read_filelist(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("spk/00001 extra\n\nspk/00002\n")
    assert read_filelist(str(path)) == ["spk/00001", "spk/00002"]
    path.write_text("\n \n")
    with pytest.raises(TalkLipError, match="list.txt is empty"):
        read_filelist(str(path))
    with pytest.raises(TalkLipError, match="nope.txt does not exist"):
        read_filelist(str(tmp_path / "nope.txt"))


def test_a_byte_order_mark_comments_and_repeats_are_not_clip_names(tmp_path):
    """Windows editors start a UTF-8 file with a BOM; it is not part of the first clip's name. '#' lines
    are comments. A repeated name is read once (where it first appears), with one warning."""
    path = tmp_path / "list.txt"
    path.write_bytes("\ufeffspk/00001\n# held out below\nspk/00002\n  #spk/00009\nspk/00001\nspk/00003\nspk/00002\n"
                     .encode("utf-8"))
    said = []
    assert read_filelist(str(path), warn=said.append) == ["spk/00001", "spk/00002", "spk/00003"]
    assert len(said) == 1 and "2 clip(s) again (spk/00001, spk/00002)" in said[0] and "list.txt" in said[0]
    path.write_text("spk/00001\nspk/00002\n")
    said.clear()
    assert read_filelist(str(path), warn=said.append) == ["spk/00001", "spk/00002"] and not said


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_list_saved_as_unicode_by_notepad_is_read(tmp_path, encoding):
    """Notepad's 'Unicode' is UTF-16 with a byte-order mark (little-endian; 'Unicode big endian' the other):
    read as the names it holds, CRLF and all."""
    path = tmp_path / "list.txt"
    text = "spk/00001\r\nspk/00002\r\n"
    path.write_bytes(("\ufeff" + text).encode(encoding) if encoding == "utf-16-be" else text.encode(encoding))
    assert read_filelist(str(path)) == ["spk/00001", "spk/00002"]


def test_nul_bytes_and_other_encodings_are_named_as_such(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes("spk/00001\nspk/00002\n".encode("utf-16-le"))          # UTF-16 without its mark
    with pytest.raises(TalkLipError, match=r"list.txt, line 1, holds NUL characters .*save it as UTF-8"):
        read_filelist(str(path))
    path.write_bytes("spk/00001\nspk/caf\xe9\n".encode("latin-1"))
    with pytest.raises(TalkLipError, match=r"list.txt is not UTF-8 text \(line 2, byte 17\): save it as UTF-8"):
        read_filelist(str(path))


def test_the_preprocessing_tools_read_a_utf16_list(corpus, tmp_path):
    """audio_extract (and so preprocess.sh's shards) on a UTF-16 list: the clips are extracted, no traceback."""
    from tests.conftest import run_module
    data, splits = corpus
    names = splits["all"][:2]
    (tmp_path / "list.txt").write_bytes("\r\n".join(names).encode("utf-16"))
    result = run_module("preparation.audio_extract", "--filelist", tmp_path / "list.txt", "--video_root",
                        f"{data}/main", "--audio_root", tmp_path / "audio")
    assert result.returncode == 0, result.stderr
    assert all(os.path.isfile(tmp_path / "audio" / f"{n}.wav") for n in names)
