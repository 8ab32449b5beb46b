"""A real local Orthanc (DICOMweb) for the PACS tests, loaded with real and synthetic DICOMs.

``start_orthanc(folder)`` starts :class:`medfew.pacs.local_orthanc.LocalOrthanc`; without Orthanc the
test is skipped, except under CI (``CI=true``), where it fails: CI must prove the PACS path.
``load(server, data_root, folder)`` stores the real DICOM samples of the data root and one synthetic
study (:data:`PATIENT_ID`, :data:`ACCESSION`, :data:`STUDY_DATE`) with three stripe CR series
(``fine`` and ``coarse`` support scans, ``query`` scans) and a PDF series (no pixel data).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian, generate_uid
from synthetic import dicom_dataset
from test_diagnosis import COARSE, FINE, stripes_uint8

from medfew.pacs import PacsClient
from medfew.pacs.local_orthanc import LocalOrthanc, dicom_files, missing_parts

PATIENT_ID = "PACS-PID-7"
PATIENT_NAME = "Pacs^Patient"
ACCESSION = "ACC-PACS-7"
STUDY_DATE = "20240301"
SERIES_SIZES = {"fine": 3, "coarse": 3, "query": 2}


@dataclass(frozen=True)
class LoadedPacs:
    """What :func:`load` put on the server.

    Attributes:
        study_uid: The synthetic study.
        series: ``"fine"``, ``"coarse"``, ``"query"``, ``"pdf"`` -> SeriesInstanceUID.
        samples: File name of each real sample stored -> its SeriesInstanceUID.
    """

    study_uid: str
    series: dict[str, str]
    samples: dict[str, str]


def start_orthanc(folder: Path) -> LocalOrthanc:
    """A running local Orthanc storing into ``folder`` (skip, or fail under CI, when not installed)."""
    missing = missing_parts()
    if missing:
        message = f"Orthanc with its DICOMweb plugin is not installed ({', '.join(missing)} missing)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return LocalOrthanc(folder)


def serve_orthanc(folder: Path) -> Iterator[LocalOrthanc]:
    """The body of a module-scoped ``server`` fixture: a running Orthanc, stopped after the module."""
    orthanc = start_orthanc(folder)
    try:
        yield orthanc
    finally:
        orthanc.stop()


def _study_attributes(study_uid: str) -> dict[str, object]:
    return {"StudyInstanceUID": study_uid, "PatientID": PATIENT_ID, "PatientName": PATIENT_NAME,
            "AccessionNumber": ACCESSION, "StudyDate": STUDY_DATE, "StudyTime": "101500", "StudyID": "7",
            "PatientBirthDate": "19700101", "PatientSex": "F", "ReferringPhysicianName": ""}


def synthetic_study(seed: int = 0) -> tuple[str, dict[str, str], list[Dataset]]:
    """One study: stripe CR series ``fine`` / ``coarse`` / ``query`` (query scans are fine stripes) and a PDF."""
    rng = np.random.default_rng(seed)
    study_uid = generate_uid()
    series: dict[str, str] = {}
    datasets: list[Dataset] = []
    for number, (name, count) in enumerate(SERIES_SIZES.items(), start=1):
        series[name] = generate_uid()
        period = COARSE if name == "coarse" else FINE
        for instance in range(1, count + 1):
            datasets.append(dicom_dataset(
                stripes_uint8(period, rng), modality="CR", SeriesInstanceUID=series[name], SeriesNumber=number,
                InstanceNumber=instance, SeriesDescription=f"{name} stripes", **_study_attributes(study_uid)))
    series["pdf"] = generate_uid()
    datasets.append(_pdf_dataset(study_uid, series["pdf"]))
    return study_uid, series, datasets


def _pdf_dataset(study_uid: str, series_uid: str) -> Dataset:
    """An Encapsulated PDF instance: a series without pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for key, value in _study_attributes(study_uid).items():
        setattr(ds, key, value)
    ds.SOPClassUID, ds.SOPInstanceUID = EncapsulatedPDFStorage, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = series_uid, "DOC", 9, 1
    ds.ConversionType, ds.BurnedInAnnotation, ds.MIMETypeOfEncapsulatedDocument = "WSD", "NO", "application/pdf"
    ds.DocumentTitle, ds.ConceptNameCodeSequence = "an earlier report", []
    pdf = b"%PDF-1.4\n%%EOF\n"
    ds.EncapsulatedDocument, ds.EncapsulatedDocumentLength = pdf + b"\x00" * (len(pdf) % 2), len(pdf)
    return ds


def load(server: LocalOrthanc, data_root: Path) -> LoadedPacs:
    """Store the real DICOM samples and the synthetic study on ``server`` (STOW-RS)."""
    client = PacsClient(server.settings)
    samples = {}
    for path in dicom_files(data_root / "dicom_samples"):
        client.store([path])
        samples[path.name] = str(dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
    study_uid, series, datasets = synthetic_study()
    client.store(datasets)
    return LoadedPacs(study_uid=study_uid, series=series, samples=samples)
