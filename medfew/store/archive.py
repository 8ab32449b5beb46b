"""A case library as one zip file, to move it between hospitals: class folders of PNGs plus ``manifest.json``.

    manifest.json                 {"format": "medfew-case-library", "format_version": 1, "name", "version",
                                   "classes": [...], "scans": [{"path", "label", "sha256", "modality",
                                   "body_part", "view"}, ...]}
    Pneumocystis/0001.png
    Streptococcus/0002.png

The zip is also a valid class-folder upload for the app. Reading one goes through the same limits and
checks as the app's zip upload (:func:`medfew.diagnosis.expand_class_zip`: file count, unpacked size,
per-file size, encryption) and then through strict checks of its own: every file listed, every listed
file present, decoded by medfew's reader and matching its sha256. Each image is re-encoded from its
decoded pixels (text chunks or a disguised DICOM header never reach the database). Any problem refuses
the whole archive with :class:`~medfew.store.errors.LibraryImportError`; nothing is written.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile
from typing import Any

from medfew.data.readers import load_image_bytes
from medfew.diagnosis import LoadedImage, expand_class_zip, pixel_sha256
from medfew.errors import MedfewError
from medfew.store.errors import LibraryImportError
from medfew.store.library import Store, clean_name
from medfew.store.scans import (
    METADATA_FIELDS,
    CaseLibrary,
    StoredScan,
    code_string,
    stored_scan,
)

FORMAT = "medfew-case-library"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 4 << 20
_UNSAFE = re.compile(r"[^\w .-]+")


def export_library(library: CaseLibrary) -> bytes:
    """The zip archive of ``library`` (see the module docstring); no user name, no file names."""
    entries = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # PNG is compressed already
        for index, scan in enumerate(library.scans, start=1):
            path = f"{_folder(scan.label)}/{index:04d}.png"
            archive.writestr(path, scan.png)
            entries.append({"path": path, "label": scan.label, "sha256": scan.sha256, **scan.metadata})
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": library.name,
                    "version": library.version, "classes": list(library.classes), "scans": entries}
        archive.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
    return buffer.getvalue()


def read_library_archive(data: bytes, archive_name: str) -> CaseLibrary:
    """Check and decode a library archive (nothing is written).

    Args:
        data: The zip file's bytes.
        archive_name: Its file name (messages only).

    Returns:
        The library (``version`` as in the manifest; saving it gives the next free version).

    Raises:
        LibraryImportError: Any problem, named (see the module docstring).
    """
    try:
        members, problems = expand_class_zip(data, archive_name)
    except MedfewError as exc:
        raise LibraryImportError(archive_name, getattr(exc, "reason", str(exc))) from exc
    problems = [p for p in problems if p.name != f"{archive_name}/{MANIFEST}"]
    if problems:
        raise LibraryImportError(archive_name, f"{problems[0]}" + (f" (and {len(problems) - 1} more problems)"
                                                                   if len(problems) > 1 else ""))
    manifest = _manifest(data, archive_name)
    files = {m.name[len(archive_name) + 1:]: m.data for m in members}
    classes = manifest["classes"]
    listed = [entry["path"] for entry in manifest["scans"]]
    extra = sorted(set(files) - set(listed))
    if extra:
        raise LibraryImportError(archive_name, f"{extra[0][:120]} is not listed in {MANIFEST}")
    scans = [_scan(entry, files, classes, archive_name) for entry in manifest["scans"]]
    return CaseLibrary(classes=tuple(classes), scans=tuple(scans), name=manifest["name"],
                       version=manifest["version"])


def import_library(store: Store, data: bytes, archive_name: str, *, name: str | None = None,
                   user: str = "local") -> CaseLibrary:
    """Read a library archive and save it as the next version of its name (or of ``name``)."""
    library = read_library_archive(data, archive_name)
    return store.save_library(name or library.name, library.classes, library.scans, user=user)


def _folder(label: str) -> str:
    folder = _UNSAFE.sub("_", label).strip(" .")
    return folder or "class"


def _manifest(data: bytes, archive_name: str) -> dict[str, Any]:
    def refuse(reason: str) -> LibraryImportError:
        return LibraryImportError(archive_name, f"{MANIFEST}: {reason}")

    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # readable and within limits: expand_class_zip checked
        try:
            info = archive.getinfo(MANIFEST)
        except KeyError:
            raise LibraryImportError(archive_name, f"no {MANIFEST} at the top of the archive: not a medfew case "
                                                   "library (a zip of class folders is uploaded in the app)") from None
        if info.file_size > MAX_MANIFEST_BYTES:
            raise refuse(f"{info.file_size:,} bytes; at most {MAX_MANIFEST_BYTES:,} are accepted")
        try:
            manifest = json.loads(archive.read(info))
        except (ValueError, UnicodeDecodeError) as exc:
            raise refuse(f"not valid JSON ({str(exc)[:120]})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise refuse(f"'format' must be {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise refuse(f"'format_version' {str(manifest.get('format_version'))[:20]} is not supported "
                     f"(this medfew reads {FORMAT_VERSION})")
    try:
        manifest["name"] = clean_name(_text(manifest.get("name")))
        classes = manifest.get("classes")
        if not isinstance(classes, list) or not classes:
            raise refuse("'classes' must be a non-empty list of names")
        manifest["classes"] = [clean_name(_text(c), "class name") for c in classes]
    except MedfewError as exc:
        raise refuse(str(exc)) from exc
    version = manifest.get("version")
    manifest["version"] = version if isinstance(version, int) and not isinstance(version, bool) else 0
    scans = manifest.get("scans")
    if not isinstance(scans, list) or not scans or not all(isinstance(s, dict) for s in scans):
        raise refuse("'scans' must be a non-empty list of objects")
    return manifest


def _scan(entry: dict[str, Any], files: dict[str, bytes], classes: list[str], archive_name: str) -> StoredScan:
    path = _text(entry.get("path"))[:200]
    if path not in files:
        raise LibraryImportError(archive_name, f"{MANIFEST} lists {path!r}, which is not in the archive")
    label = _text(entry.get("label"))
    if label not in classes:
        raise LibraryImportError(archive_name, f"{path}: label {label[:80]!r} is not one of the classes {classes}")
    try:
        pixels = load_image_bytes(files[path], f"{archive_name}/{path}")
    except MedfewError as exc:
        raise LibraryImportError(archive_name, f"{path}: {getattr(exc, 'reason', str(exc))}") from exc
    scan = stored_scan(label, LoadedImage(pixels=pixels, sha256=pixel_sha256(pixels)))
    expected = _text(entry.get("sha256"))
    if scan.sha256 != expected:
        raise LibraryImportError(archive_name, f"{path}: the pixels' sha256 {scan.sha256[:12]} does not match "
                                               f"the manifest's {expected[:12]!r} (damaged or altered)")
    return dataclasses.replace(scan, **{key: code_string(entry.get(key)) for key in METADATA_FIELDS})


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
