"""Write a :class:`~medfew.reporting.report.DiagnosticReport` as a DICOM Encapsulated PDF.

The output is an Encapsulated PDF Storage instance (SOP class 1.2.840.10008.5.1.4.1.1.104.1) in a
new series of the *source study*, so a PACS files it beside the scans it describes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from medfew import __version__
from medfew.data.atomic import atomic_write
from medfew.errors import ImageReadError
from medfew.reporting.pdf_writer import render_pdf
from medfew.reporting.report import DiagnosticReport

COPIED_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
"""Patient and study elements copied from the source data set (type 1/2 of the Patient and Study modules)."""

_TYPE2_DEFAULTS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate",
                   "StudyTime", "AccessionNumber", "ReferringPhysicianName")


Source = Dataset | str | Path | bytes
"""A source study: a ``pydicom.Dataset``, a DICOM file path, or a DICOM file's bytes (an upload)."""


def _read_source(source: Source) -> Dataset:
    if isinstance(source, Dataset):
        return source
    name = "<uploaded DICOM>" if isinstance(source, bytes) else source
    try:
        return dcmread(BytesIO(source) if isinstance(source, bytes) else source, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError) as exc:
        raise ImageReadError(name, f"cannot read the source DICOM study ({type(exc).__name__})") from exc


def report_dataset(report: DiagnosticReport, source_dataset: Source) -> Dataset:
    """Build the Encapsulated PDF data set (see :func:`write_dicom`) without writing it."""
    source = _read_source(source_dataset)
    pdf = render_pdf(report)
    now = datetime.now(UTC)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    for keyword in _TYPE2_DEFAULTS:
        setattr(ds, keyword, "")
    for keyword in COPIED_KEYWORDS:
        if keyword in source:
            ds[keyword] = source[keyword]
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid()
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DOC"
    ds.SeriesNumber = 999
    ds.InstanceNumber = 1
    ds.Manufacturer = "medfew"
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"
    ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES" if report.include_identifiers else "NO"
    ds.DocumentTitle = "medfew few-shot diagnostic report (research use only)"
    ds.SeriesDescription = "medfew report (research use only)"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    return ds


def write_dicom(report: DiagnosticReport, path: str | Path, source_dataset: Source) -> Path:
    """Write the report as a DICOM Encapsulated PDF that files into the source study.

    **This file carries patient identifiers.** It copies the source study's PatientName, PatientID,
    birth date, sex, StudyInstanceUID, accession number and the other :data:`COPIED_KEYWORDS` into its
    header, whatever ``report.include_identifiers`` says, because a PACS needs them to file the report
    with the patient's study. (``include_identifiers`` still decides whether the *embedded PDF* shows
    them.) Treat the output like any other DICOM object of that patient.

    Args:
        report: The report (rendered with :func:`~medfew.reporting.pdf_writer.render_pdf`).
        path: Output file.
        source_dataset: The query's DICOM data set (a ``pydicom.Dataset``, a file path or the file's
            bytes); a new series of its study holds the report.

    Returns:
        ``path``.

    Raises:
        ImageReadError: ``source_dataset`` is a path that is not a readable DICOM file.
    """
    ds = report_dataset(report, source_dataset)
    path = Path(path)
    atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))
    return path


def render_dicom(report: DiagnosticReport, source_dataset: Source) -> bytes:
    """The bytes of :func:`write_dicom`'s file, for a download (the same identifiers warning applies).

    Raises:
        ImageReadError: ``source_dataset`` is not a readable DICOM file.
    """
    buffer = BytesIO()
    report_dataset(report, source_dataset).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
