"""Write a :class:`~medfew.reporting.report.DiagnosticReport` as one JSON file (PNGs base64-encoded)."""

from __future__ import annotations

import json
from pathlib import Path

from medfew.data.atomic import atomic_write_bytes
from medfew.reporting.report import DiagnosticReport


def report_json(report: DiagnosticReport, *, images: bool = True) -> str:
    """The report as indented JSON text (``images=False`` leaves the PNGs out)."""
    return json.dumps(report.to_dict(images=images), indent=2, ensure_ascii=False, allow_nan=False)


def write_json(report: DiagnosticReport, path: str | Path, *, images: bool = True) -> Path:
    """Write the report to ``path`` atomically (UTF-8) and return the path."""
    path = Path(path)
    atomic_write_bytes(path, report_json(report, images=images).encode("utf-8"))
    return path
