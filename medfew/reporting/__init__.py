"""medfew.reporting: the diagnostic report (data) and its writers - JSON, PDF, DICOM (Encapsulated PDF, SR)."""

from medfew.reporting.dicom_writer import render_dicom, write_dicom
from medfew.reporting.from_session import report_inputs
from medfew.reporting.images import (
    QueryImages,
    query_images,
    saliency_overlay_png,
    thumbnail_png,
)
from medfew.reporting.json_writer import report_json, write_json
from medfew.reporting.pdf_writer import render_pdf, write_pdf
from medfew.reporting.report import (
    DISCLAIMER,
    DiagnosticReport,
    ModelSummary,
    QueryResult,
    ReportInputs,
    ReportSettings,
    SupportSummary,
    build_report,
    training_domains,
)
from medfew.reporting.sr_writer import render_sr, sr_dataset, write_sr
from medfew.reporting.writers import REPORT_WRITERS, ReportWriter

__all__ = [
    "DISCLAIMER",
    "REPORT_WRITERS",
    "DiagnosticReport",
    "ModelSummary",
    "QueryImages",
    "QueryResult",
    "ReportInputs",
    "ReportSettings",
    "ReportWriter",
    "SupportSummary",
    "build_report",
    "query_images",
    "render_dicom",
    "render_pdf",
    "render_sr",
    "report_inputs",
    "report_json",
    "saliency_overlay_png",
    "sr_dataset",
    "thumbnail_png",
    "training_domains",
    "write_dicom",
    "write_json",
    "write_pdf",
    "write_sr",
]
