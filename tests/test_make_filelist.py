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
