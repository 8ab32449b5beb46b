"""The diagnostic report as data: :class:`DiagnosticReport` and :func:`build_report` from plain inputs.

Every query carries the calibrated probabilities, its conformal prediction set with the coverage
statement (or why there is none), and the flags; the model summary carries the temperature the
probabilities were calibrated with.

A report holds everything a writer needs (text, numbers, PNG bytes) and nothing that needs a model;
it is built from plain data too (:class:`ReportInputs`, the predictions, PNGs already drawn), never from
a live session: :func:`medfew.reporting.from_session.report_inputs` turns a session into that data.
It never holds file names of support scans (they often contain patient names): support images are
named by the sha256 of their pixels. Patient identifiers appear only when ``include_identifiers=True``,
taken from the DICOM header of each query.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from medfew import __version__
from medfew.errors import ConfigError
from medfew.reporting.dicom_fields import report_attributes
from medfew.reporting.images import QueryImages, query_images

if TYPE_CHECKING:  # types only: importing medfew.diagnosis would import the session, and torch
    from medfew.diagnosis.prediction import LeaveOneOutResult, Prediction

DISCLAIMER = (
    "RESEARCH USE ONLY. Not a medical device and not approved for clinical diagnosis. The scores come "
    "from a few-shot model adapted to a handful of example scans; they may be wrong and must be "
    "reviewed by a qualified clinician together with all other clinical information."
)


@dataclass(frozen=True)
class ModelSummary:
    """Which model made the predictions.

    Attributes:
        name: ``method/backbone@sha[:12]`` (``CheckpointInfo.name``), or ``method/in-memory``.
        method: Method name (``protonet``, ``maml``, ...).
        backbone: Backbone name.
        weights_sha256: sha256 of the weights file ("" for an in-memory model).
        training_data: Names of the datasets the model was meta-trained (and validated) on, each once.
        training_modalities: Their imaging modalities in words, each once (catalogue datasets only).
        input_size: What the model reads, e.g. ``"64x64 pixels, 3 channels"`` ("" when unknown).
        temperature: The model's logit temperature ``T`` (its calibration): the probabilities are
            ``softmax(logits / T)``; 1.0 means uncalibrated.
    """

    name: str
    method: str
    backbone: str
    weights_sha256: str
    training_data: tuple[str, ...] = ()
    training_modalities: tuple[str, ...] = ()
    input_size: str = ""
    temperature: float = 1.0

    @property
    def calibration_statement(self) -> str:
        """One sentence on how the probabilities were calibrated."""
        if self.temperature == 1.0:
            return "Probabilities are not calibrated: the model carries no temperature (T = 1)."
        return (f"Probabilities are calibrated by temperature scaling, softmax(logits / T) with T = "
                f"{self.temperature:.3g}, fitted on validation episodes of the model's training domains.")


@dataclass(frozen=True)
class SupportSummary:
    """The support set the model was adapted to.

    Attributes:
        classes: Class names, in the session's order.
        counts: Class name -> number of scans.
        image_sha256: Class name -> sha256 of each scan's pixels (never file names).
        leave_one_out_accuracy: Leave-one-out accuracy of the support set, or ``None`` when not computed.
        leave_one_out_warning: What a weak support set means and what to do, or ``None``.
    """

    classes: tuple[str, ...]
    counts: dict[str, int]
    image_sha256: dict[str, tuple[str, ...]]
    leave_one_out_accuracy: float | None = None
    leave_one_out_warning: str | None = None


@dataclass(frozen=True)
class ReportSettings:
    """The thresholds and preprocessing the predictions were made with (``DiagnosticReport.settings``).

    Attributes:
        uncertain_threshold: Normalised-entropy threshold of the *uncertain* flag, in ``(0, 1)``.
        ood_factor: Multiple of the support radius beyond which a query is out of distribution.
        conformal_alpha: Level of the conformal prediction sets, or ``None`` (no sets).
        image_size: Side ``S`` of the square model input.
        channels: Channels of the model input, 1 or 3.
        normalize: Normalisation mode of the model input (``Preprocessing.normalize``).
    """

    uncertain_threshold: float
    ood_factor: float
    conformal_alpha: float | None
    image_size: int
    channels: int
    normalize: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable dict a report carries as ``settings``."""
        return {
            "uncertain_threshold": self.uncertain_threshold,
            "ood_factor": self.ood_factor,
            "conformal_alpha": self.conformal_alpha,
            "preprocessing": {"image_size": self.image_size, "channels": self.channels, "normalize": self.normalize},
        }


@dataclass(frozen=True)
class ReportInputs:
    """What a report shows of the session that made the predictions, as plain data (no model, no tensors).

    Attributes:
        model: :class:`ModelSummary` of the model.
        support: :class:`SupportSummary` of the support set (its leave-one-out fields are replaced when
            :func:`build_report` is given ``leave_one_out``).
        settings: :class:`ReportSettings`.
    """

    model: ModelSummary
    support: SupportSummary
    settings: ReportSettings


@dataclass(frozen=True)
class QueryResult:
    """One diagnosed query.

    Attributes:
        prediction: Predicted class.
        probabilities: Class name -> calibrated probability (see ``ModelSummary.temperature``).
        normalized_entropy: Entropy divided by ``log N``, in ``[0, 1]``.
        uncertain: The *uncertain* flag (``uncertain_rule`` says which rule set it).
        out_of_distribution: The *out of distribution* flag (``None``: not computable for this method).
        thumbnail_png: PNG bytes of the query.
        saliency_overlay_png: PNG bytes of the Grad-CAM overlay, or ``None``.
        saliency_caveat: Shown with every saliency map.
        image_sha256: sha256 of the query's pixels.
        note: The clinician's note ("" when none).
        identifiers: Patient / study identifiers from the query's DICOM header; empty unless the
            report was built with ``include_identifiers=True``.
        clinical: DICOM header fields the report may show (:func:`~medfew.reporting.dicom_fields.report_attributes`:
            coded attributes only unless identifiers were included), empty for non-DICOM queries.
        prediction_set: Classes of the conformal prediction set (most probable first), or ``None``.
        set_confidence: ``1 - alpha`` of the set, or ``None``.
        set_note: Why there is no set, or why it holds every class; ``None`` otherwise.
        set_statement: The set and its coverage statement in words (``Prediction.set_statement``).
        uncertain_rule: ``"set"`` (the set holds other than one class) or ``"entropy"``.
        alias: A short name a clinician can type, ``Q<n>-<first 6 hex of the pixels' sha256>``.
    """

    prediction: str
    probabilities: dict[str, float]
    normalized_entropy: float
    uncertain: bool
    out_of_distribution: bool | None
    thumbnail_png: bytes = field(repr=False)
    saliency_overlay_png: bytes | None = field(repr=False)
    saliency_caveat: str
    image_sha256: str
    note: str = ""
    identifiers: dict[str, str] = field(default_factory=dict, repr=False)
    clinical: dict[str, Any] = field(default_factory=dict)
    prediction_set: tuple[str, ...] | None = None
    set_confidence: float | None = None
    set_note: str | None = None
    set_statement: str = ""
    uncertain_rule: str = "entropy"
    alias: str = ""


@dataclass(frozen=True)
class DiagnosticReport:
    """Everything a report writer renders.

    Attributes:
        created: ISO 8601 UTC timestamp.
        disclaimer: Research-use disclaimer, rendered first by every writer.
        model: :class:`ModelSummary`.
        support: :class:`SupportSummary`.
        queries: One :class:`QueryResult` per diagnosed scan.
        include_identifiers: Whether identifiers were copied in (``queries[i].identifiers``).
        settings: Thresholds used (``uncertain_threshold``, ``ood_factor``), the prediction sets'
            ``conformal_alpha`` (``None``: off) and preprocessing.
        medfew_version: Version that made the report.
    """

    created: str
    disclaimer: str
    model: ModelSummary
    support: SupportSummary
    queries: tuple[QueryResult, ...]
    include_identifiers: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    medfew_version: str = __version__

    def to_dict(self, *, images: bool = True) -> dict[str, Any]:
        """JSON-serialisable dict; PNGs base64-encoded (``images=False`` leaves them out)."""
        queries = []
        for q in self.queries:
            entry: dict[str, Any] = {
                "alias": q.alias,
                "prediction": q.prediction,
                "probabilities": dict(q.probabilities),
                "prediction_set": None if q.prediction_set is None else list(q.prediction_set),
                "set_confidence": q.set_confidence,
                "set_note": q.set_note,
                "set_statement": q.set_statement,
                "normalized_entropy": q.normalized_entropy,
                "uncertain": q.uncertain,
                "uncertain_rule": q.uncertain_rule,
                "out_of_distribution": q.out_of_distribution,
                "saliency_caveat": q.saliency_caveat,
                "image_sha256": q.image_sha256,
                "note": q.note,
                "clinical": dict(q.clinical),
            }
            if self.include_identifiers:
                entry["identifiers"] = dict(q.identifiers)
            if images:
                entry["thumbnail_png_base64"] = base64.b64encode(q.thumbnail_png).decode("ascii")
                entry["saliency_overlay_png_base64"] = (
                    base64.b64encode(q.saliency_overlay_png).decode("ascii") if q.saliency_overlay_png else None
                )
            queries.append(entry)
        return {
            "created": self.created,
            "disclaimer": self.disclaimer,
            "medfew_version": self.medfew_version,
            "model": {
                "name": self.model.name,
                "method": self.model.method,
                "backbone": self.model.backbone,
                "weights_sha256": self.model.weights_sha256,
                "training_data": list(self.model.training_data),
                "training_modalities": list(self.model.training_modalities),
                "input_size": self.model.input_size,
                "temperature": self.model.temperature,
                "calibration": self.model.calibration_statement,
            },
            "support": {
                "classes": list(self.support.classes),
                "counts": dict(self.support.counts),
                "image_sha256": {k: list(v) for k, v in self.support.image_sha256.items()},
                "leave_one_out_accuracy": self.support.leave_one_out_accuracy,
                "leave_one_out_warning": self.support.leave_one_out_warning,
            },
            "settings": dict(self.settings),
            "include_identifiers": self.include_identifiers,
            "queries": queries,
        }


def training_domains(data_provenance: Sequence[Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The dataset names of a checkpoint's data provenance, and their modalities, each listed once.

    Args:
        data_provenance: ``CheckpointInfo.data_provenance`` (one dict per pool: train and val splits).

    Returns:
        ``(names, modalities)`` in first-seen order; a name outside the catalogue adds no modality.
    """
    from medfew.data.sources.catalog import dataset_info, is_catalog_name

    names = tuple(dict.fromkeys(
        str(d["name"]) for d in data_provenance if isinstance(d, dict) and isinstance(d.get("name"), str) and d["name"]
    ))
    modalities = tuple(dict.fromkeys(dataset_info(n).modality for n in names if is_catalog_name(n)))
    return names, modalities


def build_report(
    inputs: ReportInputs,
    predictions: Sequence[Prediction],
    *,
    notes: Sequence[str] | str = "",
    include_identifiers: bool = False,
    leave_one_out: LeaveOneOutResult | None = None,
    created: datetime | None = None,
    images: Sequence[QueryImages] | None = None,
) -> DiagnosticReport:
    """Assemble a report from plain data: the session's summary and its predictions (touches no model).

    Args:
        inputs: Model, support set and settings of the session the predictions came from
            (:func:`medfew.reporting.from_session.report_inputs`).
        predictions: Results of ``session.diagnose``, one per query.
        notes: One clinician's note for all queries, or one per prediction.
        include_identifiers: Copy patient / study identifiers from each DICOM query's header.
        leave_one_out: ``session.leave_one_out()`` result, if computed; it replaces the leave-one-out
            fields of ``inputs.support``.
        created: Timestamp (default: now, UTC).
        images: The PNGs of each prediction when they are drawn already (one per prediction, e.g. the
            app's screen thumbnails); default: drawn here with :func:`~medfew.reporting.images.query_images`.

    Returns:
        The :class:`DiagnosticReport`, queries aliased ``Q1-...``, ``Q2-...`` in the order given.

    Raises:
        ConfigError: ``notes`` (a list) or ``images`` has a length other than ``len(predictions)``.
    """
    if isinstance(notes, str):
        notes = [notes] * len(predictions)
    if len(notes) != len(predictions):
        raise ConfigError(f"got {len(notes)} notes for {len(predictions)} predictions; give one note or one per query")
    if images is None:
        images = [query_images(p.image, p.model_input, p.saliency) for p in predictions]
    if len(images) != len(predictions):
        raise ConfigError(f"got {len(images)} image sets for {len(predictions)} predictions; give one per query")
    queries = tuple(_query_result(p, note, drawn, include_identifiers, alias=f"Q{i}-{p.image_sha256[:6]}")
                    for i, (p, note, drawn) in enumerate(zip(predictions, notes, images), start=1))
    support = inputs.support if leave_one_out is None else replace(
        inputs.support, leave_one_out_accuracy=leave_one_out.accuracy, leave_one_out_warning=leave_one_out.warning)
    stamp = (created or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    return DiagnosticReport(created=stamp, disclaimer=DISCLAIMER, model=inputs.model, support=support,
                            queries=queries, include_identifiers=include_identifiers,
                            settings=inputs.settings.to_dict())


def _query_result(prediction: Prediction, note: str, images: QueryImages, include_identifiers: bool, *,
                  alias: str) -> QueryResult:
    dicom = prediction.dicom
    return QueryResult(
        prediction=prediction.predicted,
        probabilities=dict(prediction.probabilities),
        normalized_entropy=prediction.normalized_entropy,
        uncertain=prediction.uncertain,
        out_of_distribution=prediction.out_of_distribution,
        thumbnail_png=images.thumbnail_png,
        saliency_overlay_png=images.saliency_overlay_png,
        saliency_caveat=prediction.saliency_caveat,
        image_sha256=prediction.image_sha256,
        note=str(note or ""),
        identifiers=dict(dicom.identifying) if (dicom is not None and include_identifiers) else {},
        clinical={} if dicom is None else report_attributes(dicom.clinical, include_identifiers=include_identifiers),
        prediction_set=prediction.prediction_set,
        set_confidence=prediction.set_confidence,
        set_note=prediction.set_note,
        set_statement=prediction.set_statement,
        uncertain_rule=prediction.uncertain_rule,
        alias=alias,
    )
