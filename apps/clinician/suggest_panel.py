"""Sidebar panel: test-time settings suggested for the loaded support scans, and a button to apply them.

The suggestion is :func:`medfew.suggest.suggest_settings` on the session's support scans (never on
diagnosed queries): the checkpoint's configurations ranked on its most similar past tasks, the best
three checked by leave-one-out on the scans. It is computed once per support set and model.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
import torch
from workspace import Workspace

from medfew.data import normalize_batch
from medfew.errors import MedfewError
from medfew.suggest import (
    MetaDataset,
    Suggestion,
    describe,
    load_for_checkpoint,
    suggest_settings,
    with_options,
)

STATE_KEY = "suggest_panel_result"
NOTES_KEY = "suggest_panel_notes"


@st.cache_resource(show_spinner=False)
def load_meta(checkpoint: str, weights_sha256: str) -> MetaDataset:
    """The checkpoint's meta-dataset, read once per server process."""
    return load_for_checkpoint(checkpoint, weights_sha256)


def compute(workspace: Workspace) -> Suggestion:
    """Suggest settings for the workspace's support scans (the checkpoint's own settings as the base)."""
    session = workspace.session
    info = session.info
    assert info is not None
    images = torch.stack([scan.model_input for scan in session.support])
    labels = torch.tensor([session.class_names.index(scan.label) for scan in session.support], dtype=torch.int64)
    base = with_options(session.method, dict(info.method_hparams))
    inputs = normalize_batch(images.to(session.device), info.preprocessing.normalize)
    return suggest_settings(base, load_meta(str(info.path), info.weights_sha256), images=images,
                            model_inputs=inputs, labels=labels.to(session.device))


def suggest_sidebar(workspace: Workspace) -> None:
    """Show the suggestion for the current support scans, with Apply / Reset buttons."""
    with st.sidebar:
        st.header("Suggested settings")
        session = workspace.session
        for kind, message in st.session_state.pop(NOTES_KEY, []):
            getattr(st, kind)(message)
        if workspace.method_options:
            st.caption(f"In use: {describe(workspace.method_options)}.")
            st.button("Back to the checkpoint's settings", key="suggest_reset", on_click=_apply, args=(workspace, {}))
        counts = session.support_counts()
        if session.info is None or len(counts) < 2 or min(counts.values()) < 2:
            st.caption("Load two or more scans in each of two or more classes: the model's settings are then "
                       "suggested from similar past tasks and checked on your scans by leave-one-out.")
            return
        key = (workspace.model_key, tuple((scan.sha256, scan.label) for scan in session.support))
        cached: tuple[Any, Suggestion | str] | None = st.session_state.get(STATE_KEY)
        if cached is None or cached[0] != key:
            try:
                with st.spinner("Checking settings on your scans..."):
                    cached = (key, compute(workspace))
            except MedfewError as exc:
                cached = (key, str(exc))
            st.session_state[STATE_KEY] = cached
        suggestion = cached[1]
        if isinstance(suggestion, str):
            st.info(f"No suggestion: {suggestion}")
            return
        show(suggestion)
        applied = suggestion.options == workspace.method_options
        st.button("Apply suggested settings", key="suggest_apply", disabled=applied, on_click=_apply,
                  args=(workspace, suggestion.options),
                  help="Rebuilds the model with these settings; your classes and scans stay. Adapt again.")


def show(suggestion: Suggestion) -> None:
    """The pick, its leave-one-out accuracy with the 95% Wilson interval, and the other candidates."""
    check = suggestion.check
    st.markdown(f"**{describe(suggestion.options)}**")
    if check is not None:
        st.markdown(f"Leave-one-out on your scans: {check.correct} of {check.total} "
                    f"({100 * check.accuracy:.0f}%; 95% Wilson interval {100 * check.ci_low:.0f}-"
                    f"{100 * check.ci_high:.0f}%).")
    rows = [{"settings": describe(c.options), "past tasks": f"{100 * c.neighbour_accuracy:.1f}%",
             "leave-one-out": f"{c.correct}/{c.total}"} for c in suggestion.checks]
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
    sources = ", ".join(f"{s} ({n})" for s, n in suggestion.neighbour_sources.items())
    st.caption(f"Ranked on the most similar of the model's past validation tasks: {sources}.")


def _apply(workspace: Workspace, options: dict[str, Any]) -> None:
    """Button callback (runs before the page is drawn again, so the page shows the new settings)."""
    notes = [("error", f"Dropped with the new settings: {message}") for message in workspace.apply_method_options(options)]
    st.session_state[NOTES_KEY] = [*notes, ("success", f"Now using {describe(options)}. Click Adapt again.")]
