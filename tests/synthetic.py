"""Synthetic image files for tests: tiny PNG / JPEG rasters and DICOM data sets written into tmp_path.

Import them as ``from synthetic import ...`` (``tests/`` is on ``sys.path`` under pytest's rootdir
conftest). Every DICOM carries a fake patient identity (``Doe^Jane`` / ``PID-0001``) so tests can
check that identifiers never leak into logs, reports or errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

FAKE_PATIENT_NAME = "Doe^Jane"
FAKE_PATIENT_ID = "PID-0001"


def _save_image(path: Path, pixels: np.ndarray, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def write_png(path: Path, value: int = 128, size: int = 32, mode: str = "L") -> Path:
    """A flat PNG of one value: ``(size, size)`` grey for ``mode="L"``, else ``(size, size, 3)`` RGB."""
    shape = (size, size) if mode == "L" else (size, size, 3)
    return _save_image(path, np.full(shape, value, dtype=np.uint8), "PNG")


def write_image(path: Path, size: tuple[int, int] = (32, 48), fmt: str = "PNG") -> Path:
    """A grey ``(rows, cols)`` uint8 ramp (``arange % 251``) saved in ``fmt`` (``PNG``, ``JPEG``...)."""
    rows, cols = size
    return _save_image(path, (np.arange(rows * cols) % 251).astype(np.uint8).reshape(rows, cols), fmt)


def dicom_dataset(
    pixels: np.ndarray | None = None,
    *,
    size: int = 16,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    sop_class: str = CTImageStorage,
    **attributes: object,
) -> Dataset:
    """A complete DICOM data set (with file meta, explicit VR little endian) holding native pixels.

    Args:
        pixels: Stored values: ``(rows, cols)`` or ``(frames, rows, cols)`` for monochrome,
            ``(rows, cols, 3)`` or ``(frames, rows, cols, 3)`` for colour; (u)int8 or (u)int16.
            ``None``: a ``(size, size)`` uint16 ramp ``arange % 4096`` stored in 12 bits.
        size: Side of the default ramp (ignored when ``pixels`` is given).
        modality: The ``Modality`` value.
        photometric: The ``PhotometricInterpretation``.
        bits_stored: ``BitsStored``; default the dtype's full width (12 for the default ramp).
        sop_class: SOP class UID, in the file meta and the data set.
        **attributes: Further elements by keyword, set last (they may override any of the above,
            ``PatientName`` included).

    Returns:
        The data set; ``NumberOfFrames`` is set when ``pixels`` holds several frames.
    """
    if pixels is None:
        pixels = (np.arange(size * size, dtype=np.uint16) % 4096).reshape(size, size)
        bits_stored = bits_stored or 12
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = FAKE_PATIENT_NAME
    ds.PatientID = FAKE_PATIENT_ID
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    for key, value in attributes.items():
        setattr(ds, key, value)
    return ds


def save_dicom(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file (preamble and file meta), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicom(path: Path, pixels: np.ndarray | None = None, **options: Any) -> Path:
    """``dicom_dataset(pixels, **options)`` saved at ``path`` (no extension needed)."""
    return save_dicom(dicom_dataset(pixels, **options), path)
