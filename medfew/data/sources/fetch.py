"""Download MedMNIST / MedMNIST+ ``.npz`` files into the data root, verified by checksum.

Each file is streamed into ``<name>.npz.part``, its checksum checked (sha256 when the catalogue knows
it, else md5), and only then renamed to its final name, so a partial or wrong file never sits under
the final name. A file already present with the right checksum is not downloaded again.

The download server is the catalogue's ``url_pattern`` (Zenodo record 10519652). ``base_url=`` or
``$MEDFEW_FETCH_BASE_URL`` replaces it with ``<base_url>/<filename>`` (a mirror, or a test server).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from medfew.data.sources.catalog import MEDMNIST_SIZES, DatasetInfo, FileSpec, dataset_info, resolve_data_root
from medfew.data.sources.checksums import file_digest
from medfew.data.sources.kinds import dataset_kind
from medfew.errors import ConfigError, MedfewError

logger = logging.getLogger(__name__)

FETCH_BASE_URL_ENV = "MEDFEW_FETCH_BASE_URL"
_CHUNK = 1 << 20


def fetch_datasets(
    names: str | Sequence[str],
    *,
    size: int = 28,
    data_root: str | Path | None,
    progress: bool = True,
    base_url: str | None = None,
    timeout: float = 60.0,
) -> list[Path]:
    """Download catalogue MedMNIST datasets into ``<data_root>/medmnist/``.

    Args:
        names: One catalogue name or several (all validated before anything is downloaded).
        size: Image size of the files: 28, 64, 128 or 224 (MedMNIST+).
        data_root: Destination data root (``None``: ``$MEDFEW_DATA_ROOT``); created if missing.
        progress: Show a download progress bar.
        base_url: Download from ``<base_url>/<filename>`` instead of the catalogue URL.
        timeout: Seconds to wait for the server before giving up.

    Returns:
        The final path of each file, in the order of ``names``.

    Raises:
        ConfigError: ``size`` is not 28, 64, 128 or 224.
        RegistryError: An unknown dataset name.
        DatasetNotFoundError: A dataset that cannot be downloaded (not MedMNIST), or no data root.
        MedfewError: No connection (the message says where to put the file by hand), an HTTP
            error, or a checksum mismatch (nothing is kept).
    """
    if isinstance(size, bool) or size not in MEDMNIST_SIZES:
        raise ConfigError(f"size must be one of {list(MEDMNIST_SIZES)}, got {size!r}")
    name_list = [names] if isinstance(names, str) else list(names)
    if not name_list:
        raise ConfigError("no dataset names given to fetch")
    infos = [dataset_info(name) for name in name_list]
    for info in infos:
        kind = dataset_kind(info.kind)
        if not kind.fetchable:
            raise kind.not_fetchable(info)
    root = resolve_data_root(data_root, must_exist=False)
    base = base_url or os.environ.get(FETCH_BASE_URL_ENV) or None
    return [_fetch_one(info, size, root, base, progress, timeout) for info in infos]


def _fetch_one(
    info: DatasetInfo, size: int, root: Path, base_url: str | None, progress: bool, timeout: float
) -> Path:
    spec = info.file_for_size(size)
    dest = root / spec.path
    url = f"{base_url.rstrip('/')}/{spec.filename}" if base_url else info.url_for(size)
    if dest.is_file():
        if not spec.has_checksum:
            warnings.warn(
                f"{dest} already exists and no checksum is known for {info.name} at {size}x{size}: kept unverified",
                RuntimeWarning,
                stacklevel=3,
            )
            return dest
        if _matches(dest, spec):
            logger.info("%s already present with the right checksum; skipped", dest)
            return dest
        warnings.warn(f"{dest} exists but its checksum is wrong: downloading it again", RuntimeWarning, stacklevel=3)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part.touch()
    except OSError as exc:
        raise MedfewError(f"cannot write {part} ({exc.strerror or exc}): is the data root writable?") from exc
    try:
        digests = _download(url, part, dest, info, size, progress, timeout)
        _check(digests, spec, url, info, size)
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()
    return dest


def _matches(path: Path, spec: FileSpec) -> bool:
    algorithm, expected = ("sha256", spec.sha256) if spec.sha256 else ("md5", spec.md5)
    return file_digest(path, algorithm, chunk_size=_CHUNK) == str(expected).lower()


def _download(
    url: str, part: Path, dest: Path, info: DatasetInfo, size: int, progress: bool, timeout: float
) -> dict[str, str]:
    """Stream ``url`` into ``part``; return its md5 and sha256."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "medfew"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, part.open("wb") as out:
            total = response.headers.get("Content-Length")
            bar = tqdm(
                total=int(total) if total and total.isdigit() else None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            )
            with bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    md5.update(chunk)
                    sha256.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise MedfewError(
            f"cannot download {info.name} ({size}x{size}): the server answered HTTP {exc.code} for {url}. "
            f"{_by_hand(url, dest)}"
        ) from exc
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise MedfewError(
            f"cannot download {info.name} ({size}x{size}): the machine seems to be offline or the server is "
            f"unreachable ({reason}). {_by_hand(url, dest)}"
        ) from exc
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def _by_hand(url: str, dest: Path) -> str:
    return (
        f"Download {url} by hand (e.g. in a browser on a machine with internet access) and save it as {dest}, "
        f"then run the command again: medfew verifies its checksum."
    )


def _check(digests: dict[str, str], spec: FileSpec, url: str, info: DatasetInfo, size: int) -> None:
    if spec.sha256:
        algorithm, expected = "sha256", spec.sha256.lower()
    elif spec.md5:
        algorithm, expected = "md5", spec.md5.lower()
    else:
        warnings.warn(
            f"no checksum is known for {info.name} at {size}x{size} ({spec.filename}): saved without verification",
            RuntimeWarning,
            stacklevel=4,
        )
        return
    if digests[algorithm] != expected:
        raise MedfewError(
            f"checksum mismatch for {spec.filename} from {url}: {algorithm} expected {expected}, got "
            f"{digests[algorithm]}; nothing was kept. Retry, or check the mirror given as base_url."
        )
