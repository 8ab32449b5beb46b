"""``DicomMetadata``: a DICOM header's clinical fields, with identifying (PHI) fields kept apart; ``ImageMeta``:
what :func:`~medfew.data.readers.load_image_with_meta` returns beside the pixels of any format.

Nothing here decodes pixels; values are plain Python (``str``, ``int``, ``float`` or lists of them),
never pydicom objects, so they serialise to JSON as they are. Identifying fields are always strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import PersonName

from medfew.data.readers.dicom_groups import group_value
from medfew.data.readers.dicom_io import read_dataset
from medfew.data.readers.failures import reading
from medfew.data.readers.sniff import sniff_source
from medfew.data.readers.source import Source
from medfew.errors import ImageReadError

ClinicalValue = str | int | float | list[str] | list[int] | list[float]

IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    # patient
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "OtherPatientIDs",
    "OtherPatientNames",
    "EthnicGroup",
    "PatientComments",
    "AdditionalPatientHistory",
    "MedicalRecordLocator",
    "MilitaryRank",
    "Occupation",
    # people and places
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "ScheduledPerformingPhysicianName",
    # dates and times
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "InstanceCreationDate",
    "StudyTime",
    "SeriesTime",
    "AcquisitionTime",
    "ContentTime",
    "InstanceCreationTime",
    "AcquisitionDateTime",
    # study identifiers and free text
    "AccessionNumber",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "StudyDescription",
    "SeriesDescription",
    "ImageComments",
    "RequestedProcedureID",
    "PerformedProcedureStepID",
    "ProtocolName",
)
"""Header fields that identify a patient, a person or an encounter (after PS3.15 Annex E, conservative)."""

CLINICAL_KEYWORDS: tuple[str, ...] = (
    "Modality",
    "SOPClassUID",
    "BodyPartExamined",
    "ViewPosition",
    "Laterality",
    "ImageLaterality",
    "PatientPosition",
    "ImageType",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PresentationLUTShape",
    "Manufacturer",
    "ManufacturerModelName",
    "MagneticFieldStrength",
    "KVP",
    "LossyImageCompression",
    "BurnedInAnnotation",
)
"""Header fields kept as clinical (non-identifying) metadata; ``TransferSyntaxUID`` comes from the meta header."""

@dataclass(frozen=True)
class DicomMetadata:
    """A DICOM header split into clinical and identifying fields.

    Attributes:
        clinical: Non-identifying fields by DICOM keyword (``Modality``, ``Rows``, ``PixelSpacing``,
            ``TransferSyntaxUID``, ...), with ``TransferSyntax`` / ``SOPClass`` names beside the UIDs.
            Values are ``str``, ``int``, ``float`` or lists of them. Absent or empty fields are left out.
        identifying: Identifying fields by keyword (``PatientName``, ``PatientID``, ``StudyDate``,
            ``StudyInstanceUID``, ...), all as strings. Never log these.
    """

    clinical: Mapping[str, ClinicalValue] = field(default_factory=dict)
    identifying: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "clinical", MappingProxyType(dict(self.clinical)))
        object.__setattr__(self, "identifying", MappingProxyType(dict(self.identifying)))

    def __repr__(self) -> str:  # identifiers stay out of reprs, logs and tracebacks
        return (
            f"DicomMetadata(clinical={dict(self.clinical)!r}, identifying=<{len(self.identifying)} fields hidden>)"
        )

    @property
    def modality(self) -> str | None:
        """``Modality`` (``"CT"``, ``"MR"``, ``"CR"``, ...), if present."""
        value = self.clinical.get("Modality")
        return value if isinstance(value, str) else None

    @property
    def n_frames(self) -> int:
        """``NumberOfFrames``, 1 when absent."""
        value = self.clinical.get("NumberOfFrames", 1)
        return int(value) if isinstance(value, (int, float)) else 1

    def to_dict(self, include_identifiers: bool = False) -> dict[str, Any]:
        """A flat, JSON-serialisable copy: the clinical fields, plus identifying ones only on request.

        Args:
            include_identifiers: Also include :attr:`identifying` (for a report the clinician exports).
        """
        out: dict[str, Any] = {k: list(v) if isinstance(v, list) else v for k, v in self.clinical.items()}
        if include_identifiers:
            out.update(self.identifying)
        return out


def read_dicom_metadata(path: str | Path | bytes) -> DicomMetadata:
    """Read the header of a DICOM file, without decoding (or even reading) its pixel data.

    Args:
        path: The file, or its content (a browser upload).

    Returns:
        The :class:`DicomMetadata`.

    Raises:
        ImageReadError: When the file is missing, empty or not DICOM.
    """
    source = (
        Source.from_bytes(path, "<bytes>")
        if isinstance(path, (bytes, bytearray, memoryview))
        else Source.from_path(path)
    )
    fmt = sniff_source(source)
    if fmt != "dicom":
        raise ImageReadError(source.name, f"not a DICOM file (content is {fmt})")
    return dataset_metadata(read_dataset(source, stop_before_pixels=True), source.name)


def dataset_metadata(ds: Dataset, name: str) -> DicomMetadata:
    """The :class:`DicomMetadata` of an already parsed data set (with or without its pixel data).

    Args:
        ds: The data set, as :func:`~medfew.data.readers.dicom_io.read_dataset` returns it.
        name: The file name, for error messages.

    Raises:
        ImageReadError: When a header value cannot be turned into a plain value.
    """
    with reading(name, "malformed DICOM header"):  # odd values must not escape as ValueError & co.
        return DicomMetadata(clinical=_clinical(ds), identifying=_identifying(ds))


@dataclass(frozen=True)
class ImageMeta:
    """What is known about an image file beside its pixels, from the same sniff and parse.

    Attributes:
        format: The content's format, as :func:`~medfew.data.readers.sniff_format` names it
            (``"dicom"``, ``"png"``, ``"jpeg"``, ``"tiff"``, ``"bmp"``, ``"nifti"``, ``"npz"``).
        shape: ``(C, H, W)`` of the decoded image.
        dicom: The DICOM header (:class:`DicomMetadata`) when ``format`` is ``"dicom"``, else ``None``.
            Its ``repr`` hides identifying fields, so this record's does too.
    """

    format: str
    shape: tuple[int, int, int]
    dicom: DicomMetadata | None = None


def _clinical(ds: Dataset) -> dict[str, ClinicalValue]:
    out: dict[str, ClinicalValue] = {}
    for keyword in CLINICAL_KEYWORDS:
        value = _plain(ds[keyword]) if keyword in ds else None
        if value is None:  # enhanced IODs carry some fields in functional groups (None for the rest)
            value = _plain_value(group_value(ds, keyword, 0))
        if value is not None:
            out[keyword] = value
    tsuid = ds.file_meta.get("TransferSyntaxUID")
    if tsuid:
        out["TransferSyntaxUID"] = str(tsuid)
        out["TransferSyntax"] = UID(tsuid).name
    if "SOPClassUID" in out:
        out["SOPClass"] = UID(str(out["SOPClassUID"])).name
    return out


def _identifying(ds: Dataset) -> dict[str, str]:
    out: dict[str, str] = {}
    for keyword in IDENTIFYING_KEYWORDS:
        if keyword not in ds:
            continue
        value = _plain(ds[keyword])
        if value is None:
            continue
        out[keyword] = "\\".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return out


def _plain(elem: DataElement) -> ClinicalValue | None:
    if elem.VR == "SQ":
        return None
    return _plain_value(elem.value)


def _plain_value(value: object) -> ClinicalValue | None:
    """pydicom values (PersonName, DSfloat, IS, MultiValue, UID, bytes) -> plain Python, empty -> None."""
    if value is None or value == "" or (isinstance(value, (bytes, bytearray)) and not value):
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        items = [_plain_value(v) for v in value]
        items = [v for v in items if v is not None]
        return items or None  # type: ignore[return-value]
    if isinstance(value, PersonName):
        return str(value) or None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("ascii", errors="replace").strip("\x00 ") or None
    text = str(value).strip()
    return text or None
