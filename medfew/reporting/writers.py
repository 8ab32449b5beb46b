"""Report file writers by file suffix: a new format is one writer module plus one line in
:data:`REPORT_WRITERS` (``medfew diagnose --report FILE.<suffix>`` then writes it). DICOM reports are
not here: they file into the query's study, so they need the query's data set
(:func:`medfew.reporting.dicom_writer.write_dicom`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medfew.reporting.json_writer import write_json
from medfew.reporting.pdf_writer import write_pdf
from medfew.reporting.report import DiagnosticReport

ReportWriter = Callable[[DiagnosticReport, Path], Path]
"""``writer(report, path) -> path`` (atomic: a failed write leaves no half file)."""

REPORT_WRITERS: dict[str, ReportWriter] = {
    ".pdf": write_pdf,
    ".json": write_json,
}
