"""``Source``: where an image's bytes come from (a file path or an in-memory upload), with its name for errors."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from medfew.errors import ImageReadError


@dataclass(frozen=True)
class Source:
    """The bytes of one image file, on disk or in memory.

    Build one with :meth:`from_path` or :meth:`from_bytes`; both refuse missing and empty inputs.

    Attributes:
        name: The file path or upload name, used only in error messages.
        path: The file on disk, or ``None`` for in-memory data.
        data: The file content for in-memory data, or ``None`` for a file on disk.
    """

    name: str
    path: Path | None = None
    data: bytes | None = None

    @classmethod
    def from_path(cls, path: str | Path) -> Source:
        """A source for a file on disk.

        Raises:
            ImageReadError: When the file does not exist, is not a regular file, cannot be read, or is empty.
        """
        if not isinstance(path, (str, Path)):
            raise ImageReadError(repr(path), f"expected a file path (str or Path), got {type(path).__name__}")
        p = Path(path)
        try:
            if not p.exists():
                raise ImageReadError(p, "file not found")
            if not p.is_file():
                raise ImageReadError(p, "not a regular file (is it a directory?)")
            size = p.stat().st_size
            with p.open("rb"):
                pass
        except PermissionError as exc:
            raise ImageReadError(p, "permission denied") from exc
        except OSError as exc:
            raise ImageReadError(p, f"cannot open file ({exc.strerror or exc})") from exc
        if size == 0:
            raise ImageReadError(p, "empty file (0 bytes)")
        return cls(name=str(p), path=p)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, name: str) -> Source:
        """A source for in-memory content, such as a browser upload.

        Raises:
            ImageReadError: When ``data`` is not bytes-like or is empty.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ImageReadError(name, f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            raise ImageReadError(name, "empty file (0 bytes)")
        return cls(name=str(name), data=data)

    @property
    def suffix(self) -> str:
        """The lower-case file extension of :attr:`name`, ``".nii.gz"`` counted as one."""
        lower = self.name.lower()
        if lower.endswith(".nii.gz"):
            return ".nii.gz"
        return Path(lower).suffix

    def open(self) -> BinaryIO:
        """Open the content for binary reading; the caller closes it."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise ImageReadError(self.name, f"cannot open file ({exc.strerror or exc})") from exc

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer when the content is shorter)."""
        if self.data is not None:
            return self.data[:n]
        with self.open() as fp:
            return fp.read(n)

    def read_bytes(self) -> bytes:
        """The whole content."""
        if self.data is not None:
            return self.data
        with self.open() as fp:
            return fp.read()
