"""The one conversion of a live :class:`~medfew.diagnosis.session.DiagnosisSession` into a report's plain data.

:func:`medfew.reporting.build_report` takes that data (:class:`~medfew.reporting.report.ReportInputs`)
and never a session; every caller (CLI, PACS command, clinician app) gets the data from
:func:`report_inputs`, which only reads the session's attributes (the session module is imported for
type checking only, so the reporting package loads no session or model code).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medfew.reporting.report import (
    ModelSummary,
    ReportInputs,
    ReportSettings,
    SupportSummary,
    training_domains,
)

if TYPE_CHECKING:
    from medfew.diagnosis.session import DiagnosisSession


def report_inputs(session: DiagnosisSession) -> ReportInputs:
    """Model provenance, support set and settings of a session, as plain data (reads the session only).

    Args:
        session: The session the predictions come from (adapted or not).

    Returns:
        :class:`~medfew.reporting.report.ReportInputs`; its support summary has no leave-one-out
        estimate (``build_report(..., leave_one_out=...)`` adds it).
    """
    prep = session.preprocessing
    settings = ReportSettings(uncertain_threshold=session.uncertain_threshold, ood_factor=session.ood_factor,
                              conformal_alpha=session.alpha, image_size=prep.image_size, channels=prep.channels,
                              normalize=prep.normalize)
    return ReportInputs(model=model_summary(session), support=support_summary(session), settings=settings)


def model_summary(session: DiagnosisSession) -> ModelSummary:
    """The :class:`~medfew.reporting.report.ModelSummary` of a session's model (from its checkpoint sidecar
    when it has one)."""
    info = session.info
    prep = session.preprocessing
    size = f"{prep.image_size}x{prep.image_size} pixels, {prep.channels} channel{'s' if prep.channels != 1 else ''}"
    if info is None:
        backbone = type(session.method.backbone).__name__
        return ModelSummary(name=f"{session.method.name}/in-memory", method=session.method.name,
                            backbone=backbone, weights_sha256="", temperature=session.temperature, input_size=size)
    names, modalities = training_domains(info.data_provenance)
    return ModelSummary(name=info.name, method=info.method, backbone=info.backbone,
                        weights_sha256=info.weights_sha256, training_data=names, training_modalities=modalities,
                        input_size=size, temperature=session.temperature)


def support_summary(session: DiagnosisSession) -> SupportSummary:
    """The :class:`~medfew.reporting.report.SupportSummary` of a session's support set: class names, counts,
    and the pixel sha256 of each scan (never file names), without a leave-one-out estimate."""
    hashes: dict[str, list[str]] = {c: [] for c in session.class_names}
    for scan in session.support:
        hashes[scan.label].append(scan.sha256)
    return SupportSummary(classes=session.class_names, counts=session.support_counts(),
                          image_sha256={c: tuple(v) for c, v in hashes.items()})
