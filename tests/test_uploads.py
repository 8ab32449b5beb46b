"""expand_class_zip: a zip of class folders read in memory, every unusable file named."""

from __future__ import annotations

import io
import zipfile

import pytest

from medfew.diagnosis import expand_class_zip
from medfew.errors import ImageReadError


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_labels_come_from_the_folder_holding_each_file() -> None:
    data = make_zip({"study/Rare/a.dcm": b"A", "study/Normal/b.png": b"B", "Rare/c.jpg": b"C",
                     "loose.png": b"D", ".hidden/x.png": b"E", "__MACOSX/Rare/._a.dcm": b"F", "Rare/.DS_Store": b"G"})
    uploads, problems = expand_class_zip(data, "cases.zip")
    assert [(u.name, u.label, u.data) for u in uploads] == [
        ("cases.zip/study/Rare/a.dcm", "Rare", b"A"), ("cases.zip/study/Normal/b.png", "Normal", b"B"),
        ("cases.zip/Rare/c.jpg", "Rare", b"C")]
    assert [str(p) for p in problems] == ["cases.zip/loose.png: is not inside a class folder (use <class>/<file>)"]


def test_oversized_members_are_skipped_and_named() -> None:
    data = make_zip({"Rare/big.dcm": b"x" * 5000, "Rare/small.dcm": b"y"})
    uploads, problems = expand_class_zip(data, "cases.zip", max_member_bytes=1000)
    assert [u.name for u in uploads] == ["cases.zip/Rare/small.dcm"]
    assert len(problems) == 1 and problems[0].name == "cases.zip/Rare/big.dcm" and problems[0].reason == "is 5,000 bytes, over the per-file limit of 1,000 bytes"


def test_archive_level_errors() -> None:
    with pytest.raises(ImageReadError, match=r"cases.zip: is not a readable zip archive"):
        expand_class_zip(b"PK\x03\x04 truncated", "cases.zip")
    many = make_zip({f"Rare/{i}.png": b"x" for i in range(5)})
    with pytest.raises(ImageReadError, match=r"holds 5 files; at most 4"):
        expand_class_zip(many, "cases.zip", max_files=4)
    bomb = make_zip({"Rare/a.png": b"\0" * 100_000})
    assert len(bomb) < 10_000  # compresses well: the limit is on the unpacked size
    with pytest.raises(ImageReadError, match=r"unpacks to 100,000 bytes; at most 50,000 bytes are accepted"):
        expand_class_zip(bomb, "cases.zip", max_bytes=50_000)
