"""Store a diagnosis back into the PACS: the DICOM SR and the Encapsulated PDF, into the queries' study."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom import Dataset

from medfew.pacs.client import PacsClient
from medfew.reporting import DiagnosticReport, sr_dataset
from medfew.reporting.dicom_writer import Source, report_dataset


@dataclass(frozen=True)
class StoredReport:
    """What :func:`store_report` stored.

    Attributes:
        study_uid: The study both objects were filed into (the queries' study).
        sr_uid: SOPInstanceUID of the Comprehensive SR.
        pdf_uid: SOPInstanceUID of the Encapsulated PDF.
    """

    study_uid: str
    sr_uid: str
    pdf_uid: str


def report_objects(report: DiagnosticReport, sources: Sequence[Source]) -> tuple[Dataset, Dataset]:
    """The Comprehensive SR (one container per query, each referencing its source) and the Encapsulated PDF
    (filed with the first source) of ``report``; both copy the study's patient identifiers into their header.

    Raises:
        ConfigError: Not one source per query, or sources from several studies.
        ImageReadError: A source is not a readable DICOM file.
    """
    return sr_dataset(report, sources), report_dataset(report, sources[0])


def store_report(client: PacsClient, report: DiagnosticReport, sources: Sequence[Source]) -> StoredReport:
    """Store the SR and the PDF of ``report`` into the study of its query scans (STOW-RS).

    Args:
        client: The PACS.
        report: The report, one query per source.
        sources: The query scans' DICOM (data sets, file paths or bytes), all of one study.

    Raises:
        ConfigError, ImageReadError: See :func:`report_objects`.
        PacsError: The server refused them (or any subclass: unreachable, refused login).
    """
    sr, pdf = report_objects(report, sources)
    client.store([sr, pdf])
    return StoredReport(study_uid=str(sr.StudyInstanceUID), sr_uid=str(sr.SOPInstanceUID),
                        pdf_uid=str(pdf.SOPInstanceUID))
