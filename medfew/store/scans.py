"""What a case library holds: labelled scans as PNG of the decoded pixels, with non-identifying metadata only.

A scan enters a library through :func:`stored_scan`, which keeps the pixels (PNG: 8-bit when the
image is exactly 8-bit, else 16-bit grey; colour in 8-bit RGB), the label and three DICOM fields
(modality, body part, view). The original file, its name and every other header field are dropped
there, so no patient identifier can reach the database. ``sha256`` is
:func:`medfew.diagnosis.pixel_sha256` of the pixels as the PNG decodes, so a restored scan has the
same sha256 in a session, a report and the audit trail.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from PIL import Image

from medfew.data.readers import load_image_bytes
from medfew.diagnosis import LoadedImage, pixel_sha256

METADATA_FIELDS = {"modality": "Modality", "body_part": "BodyPartExamined", "view": "ViewPosition"}
"""The only DICOM fields a library keeps: name in the library -> DICOM keyword."""
_CODE = re.compile(r"[^A-Z0-9 _-]")


@dataclass(frozen=True)
class StoredScan:
    """One labelled scan of a case library.

    Attributes:
        label: Class name.
        png: PNG of the decoded pixels.
        sha256: sha256 of the pixels the PNG decodes to (see :func:`medfew.diagnosis.pixel_sha256`).
        modality: DICOM ``Modality`` (``"CR"``, ``"CT"``...), or ``None``.
        body_part: DICOM ``BodyPartExamined``, or ``None``.
        view: DICOM ``ViewPosition`` (``"PA"``, ``"AP"``...), or ``None``.
    """

    label: str
    png: bytes = field(repr=False)
    sha256: str
    modality: str | None = None
    body_part: str | None = None
    view: str | None = None

    def image(self) -> LoadedImage:
        """The decoded scan: float32 ``(C, H, W)`` in ``[0, 1]``, without a DICOM header."""
        pixels = load_image_bytes(self.png, f"{self.label} scan {self.sha256[:12]}")
        return LoadedImage(pixels=pixels, sha256=pixel_sha256(pixels))

    @property
    def metadata(self) -> dict[str, str | None]:
        """``{"modality", "body_part", "view"}``."""
        return {"modality": self.modality, "body_part": self.body_part, "view": self.view}


@dataclass(frozen=True)
class CaseLibrary:
    """A support set: classes (in order) and labelled scans, named and versioned when saved as a library.

    Attributes:
        classes: Class names in order (a class may have no scans yet).
        scans: The labelled scans.
        name: Library name (``""`` for an autosaved draft).
        version: 1 for the first save of ``name``, then 2, 3...; 0 for a draft.
        saved_at: UTC time of the save (naive ``datetime`` in UTC).
        saved_by: The user who saved it (``"local"`` without a sign-in).
    """

    classes: tuple[str, ...]
    scans: tuple[StoredScan, ...]
    name: str = ""
    version: int = 0
    saved_at: datetime | None = None
    saved_by: str = "local"

    @property
    def counts(self) -> dict[str, int]:
        """Class -> number of scans, in class order."""
        return {c: sum(s.label == c for s in self.scans) for c in self.classes}

    def describe(self) -> str:
        """``"name v2: 3 Pneumocystis, 3 Streptococcus"``."""
        head = f"{self.name} v{self.version}" if self.name else "unsaved session"
        return f"{head}: " + ", ".join(f"{n} {c}" for c, n in self.counts.items())


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG of float32 ``(C, H, W)`` pixels in ``[0, 1]``: 8-bit when exact, else 16-bit grey; colour 8-bit RGB."""
    pixels = np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0)
    eight = np.round(pixels * 255.0)
    if pixels.shape[0] == 3 or np.array_equal((eight / 255.0).astype(np.float32), pixels):
        array = eight.astype(np.uint8)
        image = Image.fromarray(array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1))
    else:
        image = Image.fromarray(np.round(pixels[0] * 65535.0).astype(np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def stored_scan(label: str, image: LoadedImage) -> StoredScan:
    """The library form of a decoded support scan: PNG pixels, label and modality / body part / view only.

    Args:
        label: Class name.
        image: The decoded scan (its DICOM header, if any, is read for the three fields above only).
    """
    png = encode_png(image.pixels)
    sha = pixel_sha256(load_image_bytes(png, f"{label} scan"))
    clinical = image.dicom.clinical if image.dicom is not None else {}
    codes = {name: code_string(clinical.get(keyword)) for name, keyword in METADATA_FIELDS.items()}
    return StoredScan(label=label, png=png, sha256=sha, **codes)


def code_string(value: object) -> str | None:
    """A DICOM code string (CS: upper case, digits, space, underscore), at most 16 characters, else ``None``."""
    if not isinstance(value, str):
        return None
    text = _CODE.sub("", value.upper()).strip()[:16]
    return text or None
