"""What one browser session of the clinician app holds, without any Streamlit: uploads, labels, results.

:class:`Workspace` wraps a :class:`~medfew.diagnosis.DiagnosisSession` (the library does every model
step) and adds what only the screen needs: a display name and a thumbnail per support scan, the last
diagnosed queries, and one message per upload that could not be used. It lives in
``st.session_state``, so two browser sessions never share scans; nothing here touches the disk.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from medfew.diagnosis import (
    DEFAULT_ALPHA,
    DiagnosisSession,
    LeaveOneOutResult,
    LoadedImage,
    Prediction,
    expand_class_zip,
    load_input,
    support_shortfall,
)
from medfew.errors import MedfewError
from medfew.methods import FewShotMethod
from medfew.reporting import (
    DiagnosticReport,
    QueryImages,
    build_report,
    query_images,
    render_dicom,
    render_pdf,
    report_inputs,
    report_json,
    thumbnail_png,
)
from medfew.suggest import with_options
from medfew.training import CheckpointInfo

Upload = tuple[str, bytes]
"""An uploaded file: ``(file name, content)``."""

_ids = itertools.count()


@dataclass(frozen=True)
class ScanView:
    """A support scan as the screen shows it.

    Attributes:
        id: Stable id (widget keys; indices shift when a scan is removed).
        name: The upload's file name, shown on screen only (it can hold identifiers: never in a report).
        thumbnail: PNG of the decoded scan.
        loaded: The decoded image (kept to rebuild the session when the model changes).
    """

    id: int
    name: str
    thumbnail: bytes = field(repr=False)
    loaded: LoadedImage = field(repr=False)


@dataclass(frozen=True)
class QueryOutcome:
    """One diagnosed query scan.

    Attributes:
        name: The upload's file name (screen only).
        data: The uploaded bytes (the DICOM report is filed against them).
        prediction: The session's prediction.
        images: PNGs of the decoded scan and of its Grad-CAM overlay, drawn once for the screen and
            the reports.
    """

    name: str
    data: bytes = field(repr=False)
    prediction: Prediction = field(repr=False)
    images: QueryImages

    @property
    def is_dicom(self) -> bool:
        """Whether the query was a DICOM file (a DICOM report can be filed against it)."""
        return self.prediction.dicom is not None


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint loaded once per server process and copied into each browser session."""

    method: FewShotMethod
    info: CheckpointInfo

    def new_session(self, *, uncertain_threshold: float, ood_factor: float,
                    alpha: float | None = DEFAULT_ALPHA) -> DiagnosisSession:
        """A session with its own copy of the model (sessions never share mutable state).

        Args:
            uncertain_threshold: Entropy threshold of the *uncertain* flag where there is no prediction set.
            ood_factor: Out-of-distribution factor.
            alpha: Level of the prediction sets (0.1: 90% sets), or ``None`` for none.
        """
        return DiagnosisSession.from_method(
            copy.deepcopy(self.method), self.info.preprocessing, info=self.info,
            uncertain_threshold=uncertain_threshold, ood_factor=ood_factor, alpha=alpha,
        )


class Workspace:
    """One clinician's classes, support scans, adapted model and diagnosed queries.

    Args:
        session: A fresh diagnosis session (see :meth:`LoadedModel.new_session`).
    """

    def __init__(self, session: DiagnosisSession) -> None:
        self.session = session
        self.views: list[ScanView] = []
        self.outcomes: list[QueryOutcome] = []
        self.leave_one_out: LeaveOneOutResult | None = None
        self.adapt_seconds: float | None = None
        self.model_key: object = None
        self.method_options: dict[str, Any] = {}
        self.results_version = 0
        self.notes: list[str] = []
        """The clinician's note of each diagnosed query (same order as :attr:`outcomes`)."""
        self.idle = threading.Event()
        """Set while no script run of this browser session is in progress (see :meth:`settled`)."""
        self.idle.set()
        self.on_step: Callable[[str], None] | None = None
        """Called with ``"adapt"`` or ``"diagnose"`` after each (the app's audit trail)."""

    # ---------------------------------------------------------------- model
    def replace_session(self, session: DiagnosisSession) -> list[str]:
        """Move every class and scan to a new session (another model or other thresholds).

        Returns:
            Messages for scans the new model could not take (they are dropped).
        """
        old, views = self.session, self.views
        self.session, self.views, self.outcomes = session, [], []
        self.method_options = {}
        self.leave_one_out, self.adapt_seconds = None, None
        for name in old.class_names:
            session.add_class(name)
        problems = []
        for view, scan in zip(views, old.support):
            try:
                session.add_support(view.loaded, scan.label)
                self.views.append(view)
            except MedfewError as exc:
                problems.append(f"{view.name}: {exc}")
        return problems

    def apply_method_options(self, options: dict[str, Any]) -> list[str]:
        """Use the checkpoint's model with test-time method options (``{}``: its own settings), e.g. a
        suggestion; classes and scans carry over, results are dropped (adapt again).

        Returns:
            Messages for scans the rebuilt model could not take.
        """
        old = self.session
        saved = old.info.method_hparams if old.info is not None else {}
        method = with_options(old.method, {**saved, **options})
        problems = self.replace_session(DiagnosisSession.from_method(
            method, old.preprocessing, info=old.info, uncertain_threshold=old.uncertain_threshold,
            ood_factor=old.ood_factor, device=str(old.device), alpha=old.alpha))
        self.method_options = dict(options)
        return problems

    # ---------------------------------------------------------------- classes
    def _support_changed(self) -> None:
        """Results of an earlier support set no longer describe this one."""
        self.outcomes, self.leave_one_out = [], None
        self.results_version += 1

    def add_class(self, name: str) -> None:
        """Declare a class (raises ``ConfigError`` for an empty name)."""
        if name.strip() not in self.session.class_names:
            self.session.add_class(name)
            self._support_changed()

    def remove_class(self, name: str) -> None:
        """Remove a class and its scans."""
        keep = [(v, s) for v, s in zip(self.views, self.session.support) if s.label != name]
        self.session.remove_class(name)
        self.views = [v for v, _ in keep]
        self._support_changed()

    # ---------------------------------------------------------------- support scans
    def add_uploads(self, files: Sequence[Upload], label: str | None, *, window: str | None = None) -> list[str]:
        """Add uploaded files to the support set; a zip's files take the class of their folder.

        Args:
            files: ``(name, bytes)`` per upload.
            label: Class of the non-zip uploads (``None`` when only zips are given).
            window: DICOM window preset name, or ``None`` for the header's window.

        Returns:
            One message per file that was not added (the others are kept).
        """
        problems: list[str] = []
        for name, data in files:
            if _is_zip(name, data):
                try:
                    members, skipped = expand_class_zip(data, name)
                except MedfewError as exc:
                    problems.append(str(exc))
                    continue
                problems += [str(p) for p in skipped]
                for member in members:
                    problems += self._add_one(member.name, member.data, member.label, window)
            elif label is None:
                problems.append(f"{name}: choose the class of this scan first (or upload a zip of class folders)")
            else:
                problems += self._add_one(name, data, label, window)
        return problems

    def _add_one(self, name: str, data: bytes, label: str, window: str | None) -> list[str]:
        try:
            loaded = load_input(data, name, window=window)
            self.session.add_support(loaded, label)
        except MedfewError as exc:
            return [f"{name}: {_reason(exc)}"]
        except Exception as exc:  # noqa: BLE001 - one bad upload never loses the rest of the batch
            return [_unexpected(name, exc)]
        self.views.append(ScanView(id=next(_ids), name=name, thumbnail=thumbnail_png(loaded.pixels), loaded=loaded))
        self._support_changed()
        return []

    def index_of(self, scan_id: int) -> int:
        """Index in the session's support set of the scan with this id."""
        return next(i for i, view in enumerate(self.views) if view.id == scan_id)

    def remove_scan(self, scan_id: int) -> None:
        """Remove one support scan."""
        index = self.index_of(scan_id)
        self.session.remove_support(index)
        del self.views[index]
        self._support_changed()

    def relabel_scan(self, scan_id: int, label: str) -> None:
        """Give one support scan another class."""
        self.session.relabel_support(self.index_of(scan_id), label)
        self._support_changed()

    def label_of(self, scan_id: int) -> str:
        """The class of the scan with this id."""
        return self.session.support[self.index_of(scan_id)].label

    # ---------------------------------------------------------------- adapt
    def adapt_blockers(self) -> list[str]:
        """Why Adapt cannot run now (empty when it can): the session's support-set rule, in the screen's words."""
        counts = self.session.support_counts()
        too_few, empty = support_shortfall(counts)
        reasons = []
        if too_few:
            reasons.append(f"define at least two classes (now {len(counts)})")
        if empty:
            reasons.append("add scans to " + ", ".join(repr(c) for c in empty) + " or remove the class")
        return reasons

    @property
    def is_adapted(self) -> bool:
        """Whether the model is adapted to the current support set."""
        return self.session.is_adapted

    def adapt(
        self,
        progress: Callable[[int, int], None] | None = None,
        *,
        inner_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """The method's own adapt and, when every class has two or more scans, the leave-one-out scores
        (computed once: they calibrate the prediction sets and give the reliability estimate).

        Args:
            progress: ``progress(done, total)`` during leave-one-out (one adapt per support scan for
                methods without a faster exact version).
            inner_progress: ``inner_progress(step, steps)`` after each inner gradient step of the
                adapt itself (gradient-based methods).
        """
        start = time.perf_counter()
        self.session.adapt(progress, inner_progress=inner_progress)
        self.adapt_seconds = time.perf_counter() - start
        self._support_changed()
        counts = self.session.support_counts()
        if min(counts.values()) >= 2:
            self.leave_one_out = self.session.leave_one_out(progress)  # read from adapt's scores when sets are on
        if self.on_step is not None:
            self.on_step("adapt")

    # ---------------------------------------------------------------- diagnose
    def diagnose(self, files: Sequence[Upload], *, window: str | None = None) -> list[str]:
        """Diagnose query uploads (replacing the previous results).

        Returns:
            One message per file that could not be diagnosed (the others are).
        """
        outcomes, problems = [], []
        for name, data in files:
            try:
                prediction = self.session.diagnose(data, name=name, window=window)
            except MedfewError as exc:
                problems.append(f"{name}: {_reason(exc)}")
                continue
            except Exception as exc:  # noqa: BLE001 - one bad upload never loses the rest of the batch
                problems.append(_unexpected(name, exc))
                continue
            images = query_images(prediction.image, prediction.model_input, prediction.saliency)
            outcomes.append(QueryOutcome(name=name, data=data, prediction=prediction, images=images))
        self.outcomes = outcomes
        self.notes = [""] * len(outcomes)
        self.results_version += 1
        if self.on_step is not None:
            self.on_step("diagnose")
        return problems

    # ---------------------------------------------------------------- reports
    def set_note(self, index: int, text: str) -> None:
        """Keep the clinician's note of diagnosed query ``index`` (it goes into every report)."""
        if 0 <= index < len(self.notes):
            self.notes[index] = str(text or "")

    def report(self, notes: Sequence[str] | None = None, *, include_identifiers: bool = False,
               only: int | None = None) -> DiagnosticReport:
        """The report of the diagnosed queries (or of query ``only``), with one note per query
        (default: the notes kept by :meth:`set_note`)."""
        notes = self.notes if notes is None else notes
        indices = range(len(self.outcomes)) if only is None else [only]
        return build_report(
            report_inputs(self.session), [self.outcomes[i].prediction for i in indices],
            notes=[notes[i] for i in indices], include_identifiers=include_identifiers,
            leave_one_out=self.leave_one_out,
            images=[self.outcomes[i].images for i in indices],
        )

    def report_files(self, notes: Sequence[str] | None = None, *,
                     include_identifiers: bool = False) -> dict[str, bytes]:
        """``{"pdf": ..., "json": ...}`` bytes of the report of every diagnosed query."""
        report = self.report(notes, include_identifiers=include_identifiers)
        return {"pdf": render_pdf(report), "json": report_json(report).encode("utf-8")}

    def report_file(self, kind: str, *, include_identifiers: bool = False) -> bytes:
        """The ``"pdf"`` or ``"json"`` report of every diagnosed query, with the notes as they are now."""
        report = self.report(include_identifiers=include_identifiers)
        return render_pdf(report) if kind == "pdf" else report_json(report).encode("utf-8")

    def dicom_report(self, index: int, notes: Sequence[str] | None = None, *,
                     include_identifiers: bool = False) -> bytes:
        """A DICOM Encapsulated PDF of query ``index`` filed into that scan's study (carries identifiers)."""
        report = self.report(notes, include_identifiers=include_identifiers, only=index)
        return render_dicom(report, self.outcomes[index].data)

    def settled(self, build: Callable[[], bytes], *, grace_s: float = 0.5, timeout_s: float = 30.0) -> bytes:
        """``build()`` once the browser's last edit has reached this workspace.

        A download generated on click can race the rerun that commits a just-typed note (the text box
        commits when it loses focus, i.e. on that same click). Waiting ``grace_s`` for that rerun to
        start and then for the session to be idle means the note is never left out of the file.
        """
        self.idle.wait(timeout_s)
        time.sleep(grace_s)
        self.idle.wait(timeout_s)
        return build()


def _is_zip(name: str, data: bytes) -> bool:
    return name.lower().endswith(".zip") or data[:4] == b"PK\x03\x04"


def _unexpected(name: str, exc: Exception) -> str:
    """The message of an error no reader anticipated (its details go to the log, not the page)."""
    logging.getLogger(__name__).debug("unexpected error on %s", name, exc_info=exc)
    return f"{name}: could not be used ({type(exc).__name__}); the other files were kept"


def _reason(exc: MedfewError) -> str:
    """The error's reason without the file name (the caller puts the upload's name in front)."""
    return getattr(exc, "reason", None) or str(exc)
