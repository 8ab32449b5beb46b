"""medfew.pacs: the clinician's PACS through DICOMweb - search (QIDO-RS), pull (WADO-RS), store back (STOW-RS)."""

from medfew.pacs.client import (
    PacsClient,
    PulledInstance,
    SeriesMatch,
    study_date_filter,
)
from medfew.pacs.reports import StoredReport, report_objects, store_report
from medfew.pacs.settings import PacsSettings, mask_url, write_settings_file

__all__ = [
    "PacsClient",
    "PacsSettings",
    "PulledInstance",
    "SeriesMatch",
    "StoredReport",
    "mask_url",
    "report_objects",
    "store_report",
    "study_date_filter",
    "write_settings_file",
]
