"""Write a :class:`~medfew.reporting.report.DiagnosticReport` as a DICOM Comprehensive SR (built with highdicom).

The SR (SOP class 1.2.840.10008.5.1.4.1.1.88.33) is a new series of the *source study*, beside the
Encapsulated PDF of :mod:`medfew.reporting.dicom_writer`. Its content tree, under a "Diagnostic
imaging report" (LOINC 18748-4) container::

    TEXT  Research-use disclaimer                    DISCLAIMER
    TEXT  Algorithm Name (DCM 111001)                model name (method/backbone@sha)
    TEXT  Algorithm Version (DCM 111003)             medfew version
    TEXT  Model weights SHA-256                      checksum of the weights file
    TEXT  Probability calibration                    how the probabilities were calibrated
    CONTAINER  Few-shot diagnosis                    one per diagnosed query
        IMAGE Source image (DCM 121322)              the query's SOP class / instance
        TEXT  Predicted class                        e.g. "Pneumocystis"
        NUM   Calibrated probability                 of the predicted class, in [0, 1]
        TEXT  Class  (one per class)                 class name
            NUM  Calibrated probability              that class's probability
        TEXT  Prediction set                         "a, b" / "empty" / "none", with its statement
            NUM  Prediction set confidence           1 - alpha (when there is a set)
        TEXT  Uncertain / Out of distribution        "yes" / "no" / "not computed"
        TEXT  Comment (DCM 121106)                   the clinician's note, when there is one

Concepts without a standard code use the local coding scheme ``99MEDFEW`` (DICOM's ``99`` prefix).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

import highdicom as hd
from highdicom.sr import (
    CodedConcept,
    ContainerContentItem,
    ContentSequence,
    ImageContentItem,
    NumContentItem,
    RelationshipTypeValues,
    TextContentItem,
)
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from medfew import __version__
from medfew.data.atomic import atomic_write
from medfew.errors import ConfigError
from medfew.reporting.dicom_writer import Source, _read_source
from medfew.reporting.report import DiagnosticReport, QueryResult

SCHEME = "99MEDFEW"
SERIES_NUMBER = 998
DOCUMENT_TITLE = CodedConcept("18748-4", "LN", "Diagnostic imaging report")
DISCLAIMER_CODE = CodedConcept("disclaimer", SCHEME, "Research-use disclaimer")
ALGORITHM_NAME = CodedConcept("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = CodedConcept("111003", "DCM", "Algorithm Version")
WEIGHTS_SHA256 = CodedConcept("weights-sha256", SCHEME, "Model weights SHA-256")
CALIBRATION = CodedConcept("calibration", SCHEME, "Probability calibration")
DIAGNOSIS = CodedConcept("diagnosis", SCHEME, "Few-shot diagnosis")
SOURCE_IMAGE = CodedConcept("121322", "DCM", "Source image for image processing operation")
PREDICTED_CLASS = CodedConcept("predicted-class", SCHEME, "Predicted class")
PROBABILITY = CodedConcept("probability", SCHEME, "Calibrated probability")
CLASS = CodedConcept("class", SCHEME, "Class")
PREDICTION_SET = CodedConcept("prediction-set", SCHEME, "Prediction set")
SET_CONFIDENCE = CodedConcept("set-confidence", SCHEME, "Prediction set confidence")
UNCERTAIN = CodedConcept("uncertain", SCHEME, "Uncertain")
OUT_OF_DISTRIBUTION = CodedConcept("ood", SCHEME, "Out of distribution")
COMMENT = CodedConcept("121106", "DCM", "Comment")
NO_UNITS = CodedConcept("1", "UCUM", "no units")

_EVIDENCE_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                   "StudyDate", "StudyTime")
"""Type 2 Patient / Study elements highdicom copies from the evidence; empty when the source lacks them."""

_REFERENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_CONTAINS = RelationshipTypeValues.CONTAINS
_PROPERTIES = RelationshipTypeValues.HAS_PROPERTIES


def _text(name: CodedConcept, value: str, relationship: RelationshipTypeValues = _CONTAINS) -> TextContentItem:
    return TextContentItem(name=name, value=value or "-", relationship_type=relationship)


def _number(name: CodedConcept, value: float, relationship: RelationshipTypeValues) -> NumContentItem:
    return NumContentItem(name=name, value=round(float(value), 6), unit=NO_UNITS, relationship_type=relationship)


def _with_children(item: TextContentItem, children: list) -> TextContentItem:
    item.ContentSequence = ContentSequence(children, is_root=False)
    return item


def _flag(value: bool | None) -> str:
    return "not computed" if value is None else ("yes" if value else "no")


def _evidence(source: Dataset) -> Dataset:
    """``source`` with every element highdicom copies present (a copy when one is added)."""
    missing = [k for k in _EVIDENCE_TYPE2 if k not in source]
    if not missing:
        return source
    source = copy.copy(source)
    for keyword in missing:
        setattr(source, keyword, "")
    return source


def _query_container(query: QueryResult, source: Dataset) -> ContainerContentItem:
    container = ContainerContentItem(name=DIAGNOSIS, relationship_type=_CONTAINS)
    items: list = [
        ImageContentItem(name=SOURCE_IMAGE, referenced_sop_class_uid=source.SOPClassUID,
                         referenced_sop_instance_uid=source.SOPInstanceUID, relationship_type=_CONTAINS),
        _text(PREDICTED_CLASS, query.prediction),
        _number(PROBABILITY, query.probabilities[query.prediction], _CONTAINS),
    ]
    for name, probability in query.probabilities.items():
        items.append(_with_children(_text(CLASS, name), [_number(PROBABILITY, probability, _PROPERTIES)]))
    if query.prediction_set is None or query.set_confidence is None:
        items.append(_text(PREDICTION_SET, query.set_statement))
    else:
        members = ", ".join(query.prediction_set) if query.prediction_set else "empty"
        items.append(_with_children(_text(PREDICTION_SET, f"{members} ({query.set_statement})"),
                                    [_number(SET_CONFIDENCE, query.set_confidence, _PROPERTIES)]))
    items += [_text(UNCERTAIN, f"{_flag(query.uncertain)} (rule: {query.uncertain_rule})"),
              _text(OUT_OF_DISTRIBUTION, _flag(query.out_of_distribution))]
    if query.note.strip():
        items.append(_text(COMMENT, query.note.strip()))
    container.ContentSequence = ContentSequence(items, is_root=False)
    return container


def sr_dataset(report: DiagnosticReport, sources: Source | Sequence[Source]) -> hd.sr.ComprehensiveSR:
    """Build the Comprehensive SR (see :func:`write_sr`) without writing it.

    Raises:
        ConfigError: Not one source per query, or sources from more than one study.
        ImageReadError: A source is not a readable DICOM file.
    """
    if isinstance(sources, Dataset | str | Path | bytes):
        sources = [sources]
    datasets = [_evidence(_read_source(s)) for s in sources]
    if len(datasets) != len(report.queries) or not datasets:
        raise ConfigError(f"a DICOM SR needs one source DICOM per query: got {len(datasets)} for "
                          f"{len(report.queries)} queries")
    for index, ds in enumerate(datasets):
        missing = [k for k in _REFERENCE_UIDS if not ds.get(k)]
        if missing:
            raise ConfigError(f"source DICOM {index + 1} lacks {missing}: a DICOM SR cannot reference it")
    studies = {str(ds.StudyInstanceUID) for ds in datasets}
    if len(studies) != 1:
        raise ConfigError(f"the queries of one DICOM SR must come from one study; got {len(studies)} studies")
    model = report.model
    root = ContainerContentItem(name=DOCUMENT_TITLE)
    items: list = [
        _text(DISCLAIMER_CODE, report.disclaimer),
        _text(ALGORITHM_NAME, model.name),
        _text(ALGORITHM_VERSION, f"medfew {report.medfew_version}"),
        _text(WEIGHTS_SHA256, model.weights_sha256 or "in-memory model (no weights file)"),
        _text(CALIBRATION, model.calibration_statement),
    ]
    items += [_query_container(q, ds) for q, ds in zip(report.queries, datasets)]
    root.ContentSequence = ContentSequence(items, is_root=False)
    sr = hd.sr.ComprehensiveSR(
        evidence=datasets,
        content=root,
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="medfew",
        is_complete=True,
        specific_character_set="ISO_IR 192",  # UTF-8: class names and notes may hold any character
    )
    sr.SeriesDescription = "medfew structured report (research use only)"
    sr.SoftwareVersions = __version__
    return sr


def write_sr(report: DiagnosticReport, path: str | Path, sources: Source | Sequence[Source]) -> Path:
    """Write the report as a DICOM Comprehensive SR that files into the source study.

    **This file carries patient identifiers** in its header: highdicom copies the source's Patient and
    Study modules (name, id, birth date, sex, StudyInstanceUID, accession number...), whatever
    ``report.include_identifiers`` says, because a PACS needs them to file the SR with the patient's
    study, the same rule as :func:`~medfew.reporting.dicom_writer.write_dicom`. The content tree
    carries none (no identifiers, no file names), only the results and the clinician's notes.

    Args:
        report: The report (one query per source).
        path: Output file.
        sources: The query's DICOM (a ``pydicom.Dataset``, a file path or the file's bytes), or one per
            query of ``report``, all of one study; each query's container references its source instance.

    Returns:
        ``path``.

    Raises:
        ConfigError: Not one source per query, or sources from several studies.
        ImageReadError: A source is not a readable DICOM file.
    """
    sr = sr_dataset(report, sources)
    path = Path(path)
    atomic_write(path, lambda tmp: sr.save_as(tmp, enforce_file_format=True))
    return path


def render_sr(report: DiagnosticReport, sources: Source | Sequence[Source]) -> bytes:
    """The bytes of :func:`write_sr`'s file (the same identifiers warning applies)."""
    buffer = BytesIO()
    sr_dataset(report, sources).save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
