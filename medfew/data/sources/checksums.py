"""File checksums: hex digests read in chunks, and verification against a catalogue's sha256 or md5."""

from __future__ import annotations

import hashlib
from pathlib import Path

from medfew.errors import DatasetNotFoundError, MedfewError


def file_digest(path: str | Path, algorithm: str = "sha256", *, chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks.

    Raises:
        DatasetNotFoundError: The file does not exist.
    """
    path = Path(path)
    try:
        digest = hashlib.new(algorithm)
        with path.open("rb") as fh:
            while chunk := fh.read(chunk_size):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(f"{path}: file not found") from exc
    return digest.hexdigest()


def verify_checksum(path: str | Path, sha256: str | None = None, *, md5: str | None = None) -> str:
    """Check a file against a known sha256 (preferred) or md5.

    Args:
        path: The file.
        sha256: Expected hex sha256, or ``None``.
        md5: Expected hex md5, used only when ``sha256`` is ``None``.

    Returns:
        The algorithm that was verified (``"sha256"`` or ``"md5"``).

    Raises:
        MedfewError: The digest differs (the message names the file, expected and actual digests),
            or no checksum was given.
        DatasetNotFoundError: The file does not exist.
    """
    if sha256:
        algorithm, expected = "sha256", sha256
    elif md5:
        algorithm, expected = "md5", md5
    else:
        raise MedfewError(f"{path}: no checksum given to verify against")
    actual = file_digest(path, algorithm)
    if actual.lower() != expected.lower():
        raise MedfewError(f"{path}: {algorithm} mismatch: expected {expected.lower()}, got {actual}")
    return algorithm
