"""medfew clinician app: define classes, label a few scans, adapt, diagnose, download the report.

    make app    # serves http://127.0.0.1:8501 with the default model

Every model step is the library's (:mod:`medfew.diagnosis`, :mod:`medfew.reporting`); this file is the
screen. Uploads stay in this browser session's memory (``st.session_state``); only the loaded model is
shared between sessions, and each session works on its own copy of it. Set ``MEDFEW_APP_CHECKPOINT``
to start with another checkpoint than the default model.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from library_panel import library_panel
from pacs_panel import pacs_panel
from suggest_panel import suggest_sidebar
from workspace import LoadedModel, QueryOutcome, Workspace

from medfew.data.readers import WINDOW_PRESETS
from medfew.diagnosis import (
    DEFAULT_ALPHA,
    OOD_FACTOR,
    SALIENCY_CAVEAT,
    UNCERTAIN_THRESHOLD,
    Prediction,
    join_classes,
)
from medfew.errors import MedfewError
from medfew.reporting import DISCLAIMER, training_domains
from medfew.training import load_checkpoint

DEFAULT_CHECKPOINT = os.environ.get("MEDFEW_APP_CHECKPOINT", "default")
HEADER_WINDOW = "from the file (VOI LUT / window)"
WINDOWS = [HEADER_WINDOW, *WINDOW_PRESETS]
GALLERY_COLUMNS = 6
SET_LEVELS = {"80%": 0.2, "90%": 0.1, "95%": 0.05, "off": None}  # set confidence -> alpha (share a set may miss)
DEFAULT_SET_LEVEL = next(label for label, alpha in SET_LEVELS.items() if alpha == DEFAULT_ALPHA)


@st.cache_resource(show_spinner="Loading the model...")
def load_model(checkpoint: str) -> LoadedModel:
    """Load a checkpoint once per server process (sessions get their own copies)."""
    method, info = load_checkpoint(checkpoint, map_location="cpu")
    return LoadedModel(method=method.eval(), info=info)


def window_choice(label: str, key: str) -> str | None:
    """A DICOM window preset selector; ``None`` keeps the file's own window."""
    choice = st.selectbox(label, WINDOWS, key=key, help="Applies to monochrome DICOM scans only.")
    return None if choice == HEADER_WINDOW else choice


def show_problems(key: str) -> None:
    """Show (once) the messages stored under ``key`` by the last action."""
    for message in st.session_state.pop(key, []):
        st.error(message)


# ------------------------------------------------------------------------------------ sidebar: model
def model_sidebar() -> Workspace | None:
    """Model choice and settings; returns this session's workspace (``None`` until a model loads)."""
    with st.sidebar:
        st.header("Model")
        choice = st.radio("Model", ["Default model", "Checkpoint on this server"], key="model_choice",
                          label_visibility="collapsed")
        checkpoint = DEFAULT_CHECKPOINT
        if choice != "Default model":
            checkpoint = st.text_input("Checkpoint: a run directory or a .safetensors file", key="checkpoint_path")
            checkpoint = checkpoint.strip()
        st.header("Flags")
        level = st.radio("Prediction sets that hold the true class in at least", list(SET_LEVELS),
                         index=list(SET_LEVELS).index(DEFAULT_SET_LEVEL), key="set_level", horizontal=True,
                         help="Calibrated by leave-one-out on your support scans; a scan is uncertain when its set "
                              "holds more than one class (or none). Needs two or more scans per class.")
        alpha = SET_LEVELS[level]
        uncertain = st.slider("Flag a scan as uncertain when its scores are this evenly spread", 0.05, 0.95,
                              UNCERTAIN_THRESHOLD, 0.05, key="uncertain_threshold",
                              help="Used only when there is no prediction set. 0: never spread, 1: equal scores for "
                                   "every class. Technically: the normalised entropy of the calibrated "
                                   "probabilities.")
        ood = st.slider("Flag a scan as unlike the labelled scans when it is this many times farther away than "
                        "they are from each other", 1.0, 5.0, OOD_FACTOR, 0.25, key="ood_factor",
                        help="Lower flags more scans. Technically: the out-of-distribution factor, in support radii "
                             "(distance to the nearest class mean over that class's spread, in the model's "
                             "feature space).")
        st.header("Privacy")
        st.checkbox("Include patient identifiers in the PDF and JSON reports", key="include_identifiers",
                    help="Off by default: reports then carry no patient name, id, birth date, accession "
                         "number, institution or physician.")
        if not checkpoint:
            st.info("Enter the path of a checkpoint to load.")
            return None
        try:
            model = load_model(checkpoint)
        except MedfewError as exc:
            st.error(f"Cannot load the model: {exc}")
            return None
        info = model.info
        calibration = (f"probabilities calibrated with temperature T = {info.temperature:.3g}" if info.temperature != 1.0
                       else "probabilities not calibrated (no temperature in the checkpoint)")
        names, modalities = training_domains(info.data_provenance)
        trained = ", ".join(modalities) or ", ".join(names) or "not recorded"
        st.caption(f"**{info.method}** on **{info.backbone}**, weights `{info.weights_sha256[:12]}`; {calibration}")
        st.info(f"This model reads scans at **{info.preprocessing.image_size}x{info.preprocessing.image_size} pixels** "
                f"and was trained on **{trained}**. Scans of another modality work, but less reliably.")
    key = (checkpoint, info.weights_sha256, uncertain, ood, alpha)
    workspace: Workspace | None = st.session_state.get("workspace")
    if workspace is None:
        workspace = Workspace(model.new_session(uncertain_threshold=uncertain, ood_factor=ood, alpha=alpha))
    elif workspace.model_key != key:
        problems = workspace.replace_session(model.new_session(uncertain_threshold=uncertain, ood_factor=ood,
                                                               alpha=alpha))
        for message in problems:
            st.error(f"Dropped with the new model: {message}")
    workspace.model_key = key
    st.session_state["workspace"] = workspace
    return workspace


# ------------------------------------------------------------------------------------ 1. classes
def add_class_from_input(workspace: Workspace) -> None:
    """Callback of "Add class": declare the typed class and clear the box."""
    try:
        workspace.add_class(st.session_state.get("new_class", ""))
    except MedfewError as exc:
        st.session_state["class_problems"] = [str(exc)]
    st.session_state["new_class"] = ""


def classes_step(workspace: Workspace) -> None:
    st.header("1. Classes")
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    left.text_input("New class", key="new_class", placeholder="e.g. Pneumocystis")
    right.button("Add class", key="add_class", on_click=add_class_from_input, args=(workspace,))
    show_problems("class_problems")
    counts = workspace.session.support_counts()
    if not counts:
        st.info("Define the classes to tell apart, e.g. a rare finding and its look-alikes, "
                "or upload a zip of class folders below.")
    for name, count in counts.items():
        text, button = st.columns([5, 1], vertical_alignment="center")
        text.markdown(f"**{name}**: {count} scan{'s' if count != 1 else ''}")
        button.button("Remove class", key=f"remove_class_{name}", on_click=workspace.remove_class, args=(name,))


# ------------------------------------------------------------------------------------ 2. support scans
def support_step(workspace: Workspace) -> None:
    st.header("2. Labelled scans")
    classes = list(workspace.session.class_names)
    generation = st.session_state.setdefault("support_uploader", 0)
    left, right = st.columns(2)
    with left:
        label = st.selectbox("Class of these scans", classes, key="upload_label", index=0 if classes else None,
                             placeholder="define a class first (zips need none)")
        window = window_choice("DICOM window", key="support_window")
    with right:
        files = st.file_uploader("Scans: DICOM, PNG, JPEG (several at once), or a zip of class folders",
                                 accept_multiple_files=True, key=f"support_files_{generation}")
    if st.button("Add to support set", key="add_support", disabled=not files):
        problems = workspace.add_uploads([(f.name, f.getvalue()) for f in files], label, window=window)
        st.session_state["support_problems"] = problems
        st.session_state["support_uploader"] = generation + 1
        st.rerun()
    show_problems("support_problems")
    for name in classes:
        views = [v for v in workspace.views if workspace.label_of(v.id) == name]
        if not views:
            continue
        st.subheader(f"{name} ({len(views)})")
        for row in range(0, len(views), GALLERY_COLUMNS):
            for column, view in zip(st.columns(GALLERY_COLUMNS), views[row:row + GALLERY_COLUMNS]):
                with column:
                    scan_card(workspace, view.id, view.name, view.thumbnail, classes)


def relabel(workspace: Workspace, scan_id: int) -> None:
    workspace.relabel_scan(scan_id, st.session_state[f"relabel_{scan_id}"])


def scan_card(workspace: Workspace, scan_id: int, name: str, thumbnail: bytes, classes: list[str]) -> None:
    """Thumbnail, class selector and Remove button of one support scan."""
    st.image(thumbnail, caption=name, width="stretch")
    st.selectbox("Class", classes, index=classes.index(workspace.label_of(scan_id)), key=f"relabel_{scan_id}",
                 on_change=relabel, args=(workspace, scan_id), label_visibility="collapsed")
    st.button("Remove", key=f"remove_{scan_id}", on_click=workspace.remove_scan, args=(scan_id,))


# ------------------------------------------------------------------------------------ 3. adapt
def adapt_step(workspace: Workspace) -> None:
    st.header("3. Adapt")
    blockers = workspace.adapt_blockers()
    clicked = st.button("Adapt", key="adapt", type="primary", disabled=bool(blockers))
    if blockers:
        st.info("Adapt is disabled: " + "; ".join(blockers) + ".")
        return
    if clicked:
        method = workspace.session.method
        steps = getattr(method, "test_inner_steps", None) or getattr(method, "inner_steps", None)
        what = f"{steps} gradient steps" if steps else "class prototypes"
        bar = st.progress(0.0, text=f"Adapting {method.name} to {len(workspace.views)} scans ({what})...")

        def inner_progress(step: int, steps: int) -> None:
            bar.progress(step / steps, text=f"Adapting {method.name}: gradient step {step} of {steps}")

        def progress(done: int, total: int) -> None:
            bar.progress(done / total, text=f"Leave-one-out scores of the support set (they calibrate the prediction "
                                            f"sets): {done} of {total} scans")

        try:
            workspace.adapt(progress, inner_progress=inner_progress)
        except MedfewError as exc:
            st.error(f"Adapt failed: {exc}")
        bar.empty()
    if workspace.is_adapted:
        counts = workspace.session.support_counts()
        st.success(f"Adapted to {len(counts)} classes from {sum(counts.values())} scans "
                   f"in {workspace.adapt_seconds:.2f} s.")
        note = workspace.session.set_note
        if note is not None:
            st.info(f"Prediction sets: {note}.")
        loo = workspace.leave_one_out
        if loo is None:
            st.caption("Add two or more scans per class for a leave-one-out estimate of this support set's reliability "
                       "and for prediction sets.")
        else:
            per_class = ", ".join(f"{c} {100 * a:.0f}%" for c, a in loo.per_class.items())
            st.markdown(f"**Leave-one-out**: {loo.correct} of {loo.total} support scans are predicted as their own "
                        f"class from the others ({100 * loo.accuracy:.0f}%; {per_class}). A low figure means the "
                        "classes look alike to the model, or a scan is mislabelled.")
            if loo.warning:
                st.warning(loo.warning)
    elif workspace.adapt_seconds is not None:
        st.warning("The support set changed since the last Adapt: click Adapt again.")


# ------------------------------------------------------------------------------------ 4. diagnose
def diagnose_step(workspace: Workspace) -> None:
    st.header("4. Diagnose")
    generation = st.session_state.setdefault("query_uploader", 0)
    left, right = st.columns(2)
    with left:
        files = st.file_uploader("Scans to diagnose: DICOM, PNG, JPEG", accept_multiple_files=True,
                                 key=f"query_files_{generation}")
    with right:
        window = window_choice("DICOM window ", key="query_window")
    ready = workspace.is_adapted and bool(files)
    if st.button("Diagnose", key="diagnose", type="primary", disabled=not ready):
        with st.spinner("Diagnosing..."):
            st.session_state["query_problems"] = workspace.diagnose([(f.name, f.getvalue()) for f in files],
                                                                    window=window)
    if not workspace.is_adapted:
        st.info("Diagnose is disabled until the model is adapted to the current support set.")
    elif not files and not workspace.outcomes:
        st.info("Upload the scans to diagnose.")
    show_problems("query_problems")
    for index, outcome in enumerate(workspace.outcomes):
        outcome_card(workspace, index, outcome, workspace.results_version)


def outcome_card(workspace: Workspace, index: int, outcome: QueryOutcome, version: int) -> None:
    """Prediction, probabilities, flags, saliency and note of one diagnosed scan."""
    p = outcome.prediction
    alias = f"Q{index + 1}-{p.image_sha256[:6]}"
    with st.container(border=True):
        st.subheader(f"{outcome.name}: {p.predicted} ({100 * p.probabilities[p.predicted]:.0f}%)")
        st.caption(f"In the report: {alias}")
        scan, chart, saliency = st.columns([1, 2, 1])
        scan.image(outcome.images.thumbnail_png, caption="Scan", width="stretch")
        with chart:  # one bar per class on the same 0-100% scale, most probable first, value printed
            for name, value in sorted(p.probabilities.items(), key=lambda item: -item[1]):
                st.progress(min(max(value, 0.0), 1.0), text=f"{name}: {100 * value:.1f}%")
        chart.caption(f"Calibrated probabilities (temperature T = {p.temperature:.3g})" if p.temperature != 1.0
                      else "Probabilities (this model is not calibrated)")
        if outcome.images.saliency_overlay_png is not None:
            saliency.image(outcome.images.saliency_overlay_png, caption="Grad-CAM saliency", width="stretch")
            saliency.caption(SALIENCY_CAVEAT)
        prediction_set_lines(p)
        if p.uncertain:
            st.warning(uncertain_text(p))
        if p.out_of_distribution:
            st.warning(f"Out of distribution: this scan is farther from every class ({p.ood_distance:.2f}) than "
                       f"the support scans are from their own ({p.ood_threshold:.2f} allowed). It may show something "
                       "none of the classes covers, or come from another modality or protocol.")
        elif p.out_of_distribution is None:
            st.caption("No out-of-distribution check: this model has no embedding space.")
        key = f"note_{version}_{index}"
        st.text_area("Clinician's note (goes into the report)", key=key, on_change=keep_note,
                     args=(workspace, index, key))
        workspace.set_note(index, st.session_state.get(key, ""))


def keep_note(workspace: Workspace, index: int, key: str) -> None:
    """Callback of a note box: the workspace holds the note the moment the box commits it."""
    workspace.set_note(index, st.session_state.get(key, ""))


def prediction_set_lines(p: Prediction) -> None:
    """The scan's prediction set in bold, and what it promises (or why there is none)."""
    if p.prediction_set is None or p.set_confidence is None:
        st.caption(p.set_statement + ".")
        return
    level = f"{100 * p.set_confidence:g}%"
    members = join_classes(p.prediction_set) if p.prediction_set else "no class (empty set)"
    st.markdown(f"**Prediction set ({level})**: {members}")
    promise = p.set_statement.split(" — ", 1)[-1]
    st.caption(promise[:1].upper() + promise[1:] + ".")


def uncertain_text(p: Prediction) -> str:
    """Why a scan is flagged uncertain, in one sentence."""
    if p.uncertain_rule == "set" and p.prediction_set is not None and p.set_confidence is not None:
        level = f"{100 * p.set_confidence:g}%"
        if not p.prediction_set:
            return (f"Uncertain: no class fits this scan at the {level} level (empty prediction set); it may show "
                    "something none of the classes covers.")
        return (f"Uncertain: the {level} prediction set holds {len(p.prediction_set)} classes "
                f"({join_classes(p.prediction_set)}); the model cannot tell them apart on this scan.")
    return (f"Uncertain: normalised entropy {p.normalized_entropy:.2f} is above {p.uncertain_threshold:.2f}; "
            "the model cannot tell these classes apart on this scan.")


# ------------------------------------------------------------------------------------ 5. report
def on_click_file(workspace: Workspace, build: Callable[..., bytes], *args: Any, **kwargs: Any) -> Callable[[], bytes]:
    """Download data generated on click, once the note just typed has reached the workspace (never left out)."""
    return lambda: workspace.settled(lambda: build(*args, **kwargs))


def report_step(workspace: Workspace) -> None:
    st.header("5. Report")
    if not workspace.outcomes:
        st.info("Diagnose at least one scan to build a report.")
        return
    identifiers = bool(st.session_state.get("include_identifiers", False))
    noted = sum(bool(n.strip()) for n in workspace.notes)
    st.caption(f"Clinician's notes in the report: {noted} of {len(workspace.notes)} scans.")
    pdf, data, dicom = st.columns(3)
    pdf.download_button("Download PDF report", key="download_pdf", on_click="ignore", type="primary",
                        data=on_click_file(workspace, workspace.report_file, "pdf", include_identifiers=identifiers),
                        file_name="medfew-report.pdf", mime="application/pdf")
    data.download_button("Download JSON report", key="download_json", on_click="ignore",
                         data=on_click_file(workspace, workspace.report_file, "json", include_identifiers=identifiers),
                         file_name="medfew-report.json", mime="application/json")
    with dicom:
        for index, outcome in enumerate(workspace.outcomes):
            if outcome.is_dicom:
                st.download_button(
                    f"Download DICOM report ({outcome.name})",
                    data=on_click_file(workspace, workspace.dicom_report, index, include_identifiers=identifiers),
                    file_name=f"medfew-report-{index + 1}.dcm", mime="application/dicom",
                    key=f"download_dicom_{index}", on_click="ignore",
                )
        if any(o.is_dicom for o in workspace.outcomes):
            st.caption("A DICOM report files into the scan's study, so it carries that study's patient identifiers.")
        else:
            st.caption("DICOM reports are offered for DICOM scans (they file into the scan's study).")
    if identifiers:
        st.warning("These reports include patient identifiers.")
    else:
        st.caption("These PDF and JSON reports carry no patient identifiers and no file names.")


def main() -> None:
    st.set_page_config(page_title="medfew: few-shot diagnosis", layout="wide")
    st.title("medfew: few-shot diagnosis")
    st.caption(DISCLAIMER)
    workspace = model_sidebar()
    if workspace is None:
        return
    workspace.idle.clear()
    try:
        steps(workspace)
    finally:
        workspace.idle.set()


def steps(workspace: Workspace) -> None:
    """The page's panels and steps, in order."""
    library_panel(workspace)
    classes_step(workspace)
    support_step(workspace)
    adapt_step(workspace)
    diagnose_step(workspace)
    report_step(workspace)
    suggest_sidebar(workspace)
    pacs_panel(workspace)


main()
