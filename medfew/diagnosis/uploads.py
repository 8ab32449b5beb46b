"""Labelled uploads from a zip of class folders (``Pneumocystis/a.dcm``, ``Normal/b.png``, ...), in memory.

A clinician can upload a whole support set as one zip: each file's class is the name of the folder that
holds it. Nothing is extracted to disk. Files that cannot be used (outside a class folder, encrypted,
too large) are reported one by one and the rest is kept; hidden files and macOS ``__MACOSX`` metadata
are skipped silently.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import PurePosixPath

from medfew.errors import ImageReadError

MAX_ZIP_FILES = 5000
MAX_ZIP_BYTES = 1 << 30  # 1 GiB uncompressed in all
MAX_MEMBER_BYTES = 256 << 20  # 256 MiB for one file


@dataclass(frozen=True)
class LabelledUpload:
    """One file of a zip and the class folder it was found in.

    Attributes:
        name: Path inside the zip (for messages; may hold identifiers, so never put it in a report).
        data: The file's bytes.
        label: The class: the name of the folder holding the file.
    """

    name: str
    data: bytes
    label: str


@dataclass(frozen=True)
class UploadProblem:
    """A file that was not taken, and why."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


def _skipped(path: PurePosixPath) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.parts)


def expand_class_zip(
    data: bytes,
    name: str,
    *,
    max_files: int = MAX_ZIP_FILES,
    max_bytes: int = MAX_ZIP_BYTES,
    max_member_bytes: int = MAX_MEMBER_BYTES,
) -> tuple[list[LabelledUpload], list[UploadProblem]]:
    """Read a zip of class folders in memory.

    Args:
        data: The zip file's bytes.
        name: The upload's file name (messages only).
        max_files: Refuse archives with more files than this.
        max_bytes: Refuse archives whose files add up to more than this, uncompressed (zip bombs).
        max_member_bytes: Skip (and report) any one file larger than this, uncompressed.

    Returns:
        The labelled files in archive order, and the files that were not taken with the reason.

    Raises:
        ImageReadError: Not a readable zip archive, or over ``max_files`` / ``max_bytes``.
    """
    try:
        archive = zipfile.ZipFile(BytesIO(data))
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImageReadError(name, f"is not a readable zip archive ({exc})") from exc
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and not _skipped(PurePosixPath(m.filename))]
        if len(members) > max_files:
            raise ImageReadError(name, f"holds {len(members)} files; at most {max_files} are accepted")
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            raise ImageReadError(name, f"unpacks to {_size(total)}; at most {_size(max_bytes)} are accepted")
        uploads: list[LabelledUpload] = []
        problems: list[UploadProblem] = []
        for member in members:
            path = PurePosixPath(member.filename)
            where = f"{name}/{member.filename}"
            if len(path.parts) < 2:
                problems.append(UploadProblem(where, "is not inside a class folder (use <class>/<file>)"))
            elif member.flag_bits & 0x1:
                problems.append(UploadProblem(where, "is encrypted"))
            elif member.file_size > max_member_bytes:
                problems.append(UploadProblem(where, f"is {_size(member.file_size)}, over the per-file limit of "
                                                           f"{_size(max_member_bytes)}"))
            else:
                try:
                    content = archive.read(member)
                except (zipfile.BadZipFile, OSError, ValueError) as exc:
                    problems.append(UploadProblem(where, f"cannot be read from the archive ({exc})"))
                    continue
                uploads.append(LabelledUpload(name=where, data=content, label=path.parent.name))
    return uploads, problems
