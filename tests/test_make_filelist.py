import pytest

from preparation.make_filelist import list_videos
from utils.errors import TalkLipError


def test_lrw_test_split_is_listed(tmp_path):
    for word in ("ABOUT", "AFTER"):
        for split in ("train", "test"):
            for i in (2, 1):
                path = tmp_path / word / split / f"{word}_{i:05d}.mp4"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")
    (tmp_path / "ABOUT" / "test" / "ABOUT_00001.txt").write_text("word")
    assert list_videos(str(tmp_path), "test") == ["ABOUT/test/ABOUT_00001", "ABOUT/test/ABOUT_00002",
                                                  "AFTER/test/AFTER_00001", "AFTER/test/AFTER_00002"]
    assert len(list_videos(str(tmp_path))) == 8
    with pytest.raises(TalkLipError, match="val folder"):
        list_videos(str(tmp_path), "val")


def test_any_folder_of_videos_gets_train_and_valid_lists(tmp_path):
    from tests.conftest import run_module
    videos = tmp_path / "my videos"
    names = ["holiday", "talk/a", "talk/b", "deep/er/c", "deep/er/d", "x", "y", "z", "w", "v"]
    for name in names:
        (videos / f"{name}.mp4").parent.mkdir(parents=True, exist_ok=True)
        (videos / f"{name}.mp4").write_bytes(b"")
    (videos / "notes.txt").write_text("not a video")
    proc = run_module("preparation.make_filelist", "--video_root", videos, "--split_dir", tmp_path / "lists",
                      "--valid_fraction", "0.2")
    assert proc.returncode == 0, proc.stderr
    read = lambda f: (tmp_path / "lists" / f).read_text().split()
    train, valid, everything = read("train.txt"), read("valid.txt"), read("filelist.txt")
    assert sorted(everything) == sorted(names) and len(valid) == 2
    assert sorted(train + valid) == sorted(names) and not set(train) & set(valid)
    again = run_module("preparation.make_filelist", "--video_root", videos, "--split_dir", tmp_path / "lists")
    assert again.returncode == 0


def test_a_linked_speaker_folder_is_listed_and_a_link_loop_is_said_once(tmp_path, capsys):
    """A speaker folder that is a symlink (kept on another disk) was skipped without a word; now it is
    followed, and a link back up (a loop) is skipped with a line instead of walking forever."""
    import os
    store, root = tmp_path / "other_disk" / "spk2", tmp_path / "main"
    (root / "spk1").mkdir(parents=True)
    store.mkdir(parents=True)
    (root / "spk1" / "a.mp4").write_bytes(b"")
    (store / "b.mp4").write_bytes(b"")
    os.symlink(store, root / "spk2")
    os.symlink(root, root / "spk1" / "loop")
    assert list_videos(str(root)) == ["spk1/a", "spk2/b"]
    err = capsys.readouterr().err
    assert err.count("note: skipped") == 1 and "spk1/loop: a link to" in err
