"""Render a :class:`~medfew.reporting.report.DiagnosticReport` as a PDF with reportlab.

All text is real PDF text (Platypus paragraphs and tables), so it can be searched, copied and
extracted; images are embedded PNGs. The disclaimer comes first, then model (with its calibration) and
support set, then one section per query: calibrated probabilities, the prediction set with its coverage
statement, flags, images (identifiers only when the report holds them).
"""

from __future__ import annotations

import io
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from medfew.data.atomic import atomic_write_bytes
from medfew.reporting.report import DiagnosticReport, QueryResult

_IMAGE_SIDE = 60 * mm
_GRID = TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("FONTSIZE", (0, 0), (-1, -1), 8)])


def _p(text: object, style) -> Paragraph:
    return Paragraph(escape(str(text)), style)


def _flag(value: bool | None) -> str:
    return "not available" if value is None else ("YES" if value else "no")


def _uncertain_text(query: QueryResult) -> str:
    if query.uncertain_rule == "set" and query.prediction_set is not None:
        size = len(query.prediction_set)
        why = f"the prediction set holds {size} classes" if size != 1 else "the prediction set holds one class"
        return f"Uncertain: {_flag(query.uncertain)} ({why})."
    return f"Uncertain: {_flag(query.uncertain)} (normalised entropy {query.normalized_entropy:.3f})."


def _query_section(index: int, query: QueryResult, styles, with_identifiers: bool,
                   calibrated: bool = False) -> list[Flowable]:
    body, small = styles["BodyText"], styles["Italic"]
    title = f"Query {index}" + (f" ({query.alias})" if query.alias else "")
    parts: list[Flowable] = [_p(f"{title}: predicted {query.prediction}", styles["Heading2"])]
    if with_identifiers and query.identifiers:
        rows = [[_p(k, body), _p(v, body)] for k, v in sorted(query.identifiers.items())]
        parts += [_p("Patient / study identifiers", styles["Heading4"]),
                  Table(rows, colWidths=[50 * mm, 110 * mm], style=_GRID)]
    rows = [[_p("class", body), _p("calibrated probability" if calibrated else "probability", body)]]
    ranked = sorted(query.probabilities.items(), key=lambda item: -item[1])
    rows += [[_p(c, body), _p(f"{p:.3f}", body)] for c, p in ranked]
    parts.append(Table(rows, colWidths=[80 * mm, 40 * mm], style=_GRID))
    level = f" ({100 * query.set_confidence:g}%)" if query.set_confidence is not None else ""
    parts.append(_p(f"Prediction set{level}: {query.set_statement or '(not computed)'}.", body))
    parts.append(_p(f"{_uncertain_text(query)} Out of distribution: {_flag(query.out_of_distribution)}.", body))
    pictures = [Image(io.BytesIO(query.thumbnail_png), width=_IMAGE_SIDE, height=_IMAGE_SIDE, kind="proportional")]
    if query.saliency_overlay_png:
        pictures.append(Image(io.BytesIO(query.saliency_overlay_png), width=_IMAGE_SIDE, height=_IMAGE_SIDE))
    parts.append(Table([pictures]))
    if query.saliency_overlay_png:
        parts.append(_p(f"Saliency (Grad-CAM, predicted class): {query.saliency_caveat}", small))
    if query.clinical:
        keys = [k for k in ("Modality", "BodyPartExamined", "ViewPosition", "Laterality") if k in query.clinical]
        if keys:
            parts.append(_p("; ".join(f"{k}: {query.clinical[k]}" for k in keys), body))
    parts.append(_p(f"Image sha256: {query.image_sha256}", small))
    parts.append(_p(f"Clinician's note: {query.note or '(none)'}", body))
    return [KeepTogether(parts), Spacer(1, 6 * mm)]  # a query's lines never start a page alone


def render_pdf(report: DiagnosticReport) -> bytes:
    """The report as PDF bytes (used by :func:`write_pdf` and the DICOM writer)."""
    styles = getSampleStyleSheet()
    body = styles["BodyText"]
    story: list[Flowable] = [
        _p("medfew few-shot diagnostic report", styles["Title"]),
        _p(report.disclaimer, styles["Heading4"]),
        _p(f"Created: {report.created} (medfew {report.medfew_version})", body),
        _p("Model", styles["Heading3"]),
        _p(f"{report.model.name} - method {report.model.method}, backbone {report.model.backbone}", body),
        _p(f"Weights sha256: {report.model.weights_sha256 or '(in-memory model)'}", body),
        _p(f"Trained on: {', '.join(report.model.training_data) or '(not recorded)'}"
           + (f" ({', '.join(report.model.training_modalities)})" if report.model.training_modalities else ""), body),
        _p(f"Input: {report.model.input_size or '(not recorded)'}", body),
        _p(f"Calibration: {report.model.calibration_statement}", body),
        _p("Support set", styles["Heading3"]),
    ]
    rows = [[_p("class", body), _p("scans", body)]]
    rows += [[_p(c, body), _p(report.support.counts.get(c, 0), body)] for c in report.support.classes]
    story.append(Table(rows, colWidths=[80 * mm, 30 * mm], style=_GRID))
    loo = report.support.leave_one_out_accuracy
    story.append(_p(
        "Leave-one-out accuracy of the support set: " + (f"{loo:.3f}" if loo is not None else "not computed"), body))
    if report.support.leave_one_out_warning:
        story.append(Paragraph(f"<b>{escape(report.support.leave_one_out_warning)}</b>", body))
    settings = report.settings
    if settings:
        alpha = settings.get("conformal_alpha")
        sets = (
            f"Prediction sets: level alpha = {alpha:g}, calibrated by leave-one-out on the support set (each support "
            "scan scored by the model adapted to the others); they hold the true class in at least "
            f"{100 * (1 - alpha):g}% of cases if the support scans are representative of the queries "
            "(exchangeable) - approximately, as the query is scored by the model adapted to all scans. "
            if alpha is not None else "Prediction sets: off. "
        )
        story.append(_p(
            f"{sets}Uncertain when the prediction set holds other than exactly one class; where there is no set, "
            f"when the normalised entropy > {settings.get('uncertain_threshold')}. Out of distribution when "
            f"the distance to the nearest class mean > {settings.get('ood_factor')} x the support radius.", body))
    for i, query in enumerate(report.queries, start=1):
        story += _query_section(i, query, styles, report.include_identifiers, report.model.temperature != 1.0)
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=A4, title="medfew diagnostic report", author="medfew",
                            leftMargin=18 * mm, rightMargin=18 * mm, topMargin=15 * mm, bottomMargin=15 * mm)
    doc.build(story, onFirstPage=_page_footer, onLaterPages=_page_footer)
    return buffer.getvalue()


def _page_footer(canvas: Canvas, doc: SimpleDocTemplate) -> None:
    """``medfew report - page N`` at the foot of every page."""
    canvas.saveState()
    canvas.setFont("Helvetica", 8)
    canvas.drawRightString(A4[0] - 18 * mm, 8 * mm, f"medfew diagnostic report - page {doc.page}")
    canvas.restoreState()


def write_pdf(report: DiagnosticReport, path: str | Path) -> Path:
    """Write the report as a PDF at ``path`` atomically and return the path."""
    path = Path(path)
    atomic_write_bytes(path, render_pdf(report))
    return path
