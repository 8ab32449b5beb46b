"""The app's PACS panel (sidebar): search the DICOMweb server, take a series as labelled scans or diagnose
it, and store the DICOM SR and PDF of the results back into their studies.

The server and login come from the environment or the settings file (:mod:`medfew.pacs.settings`), never
from the page. Every failure (wrong URL, refused login, empty search, a series without images) is a
message; the support set and the results already on the page are kept.
"""

from __future__ import annotations

import streamlit as st
from workspace import Workspace

from medfew.errors import MedfewError, PacsSettingsError
from medfew.pacs import PacsClient, PacsSettings, SeriesMatch, store_report

MESSAGES = "pacs_messages"
"""Session key of ``(kind, text)`` messages shown once by the next run (actions rerun the page)."""


def pacs_panel(workspace: Workspace) -> None:
    """The PACS panel, in the sidebar (called last by ``main`` so it sees this run's results)."""
    with st.sidebar:
        st.header("PACS")
        try:
            settings = PacsSettings.load()
        except PacsSettingsError as exc:
            st.caption(f"No PACS: {exc}.")
            return
        st.caption(f"DICOMweb server: {settings.display_url}")
        for kind, text in st.session_state.pop(MESSAGES, []):
            getattr(st, kind)(text)
        client = PacsClient(settings)
        search_form(client)
        matches: list[SeriesMatch] = st.session_state.get("pacs_matches", [])
        if matches:
            series_actions(client, workspace, matches)
        store_action(client, workspace)


def _say(kind: str, text: str) -> None:
    st.session_state.setdefault(MESSAGES, []).append((kind, text))


def search_form(client: PacsClient) -> None:
    """Patient id, accession number, study date and modality; *Search* keeps the matching series."""
    st.text_input("Patient ID", key="pacs_patient_id")
    st.text_input("Accession number", key="pacs_accession")
    st.text_input("Study date", key="pacs_study_date", placeholder="2024-03-01 or 2024-01-01..2024-12-31")
    st.text_input("Modality", key="pacs_modality", placeholder="CR, CT, MR...")
    if st.button("Search the PACS", key="pacs_search"):
        state = st.session_state
        try:
            state["pacs_matches"] = client.search(
                patient_id=state.get("pacs_patient_id"), accession_number=state.get("pacs_accession"),
                study_date=state.get("pacs_study_date"), modality=state.get("pacs_modality"))
        except MedfewError as exc:
            state["pacs_matches"] = []
            st.error(str(exc))


def describe(match: SeriesMatch) -> str:
    """One line per series for the picker (patient fields are for this screen only)."""
    parts = [match.study_date or "no date", match.modality or "?",
             f"{match.instances} image(s)" if match.instances is not None else "",
             match.series_description, f"patient {match.patient_id}" if match.patient_id else ""]
    return " · ".join(p for p in parts if p)


def series_actions(client: PacsClient, workspace: Workspace, matches: list[SeriesMatch]) -> None:
    """Pick a series; add it as labelled scans of a class, or diagnose it."""
    index = st.selectbox("Series", range(len(matches)), format_func=lambda i: describe(matches[i]), key="pacs_series")
    if index is None or index >= len(matches):
        return
    series = matches[index]
    classes = list(workspace.session.class_names)
    label = st.selectbox("Class of its scans", classes, key="pacs_label", index=0 if classes else None,
                         placeholder="define a class first")
    if st.button("Add as labelled scans", key="pacs_add", disabled=label is None):
        instances = _pull(client, series)
        if instances is not None:
            problems = workspace.add_uploads([i.upload for i in instances], label)
            added = len(instances) - len(problems)
            _say("success", f"Added {added} scan(s) of the series to {label}.")
            for problem in problems:
                _say("error", problem)
        st.rerun()
    if st.button("Diagnose this series", key="pacs_diagnose", disabled=not workspace.is_adapted,
                 help=None if workspace.is_adapted else "Adapt the model to the support set first."):
        instances = _pull(client, series)
        if instances is not None:
            for problem in workspace.diagnose([i.upload for i in instances]):
                _say("error", problem)
        st.rerun()


def _pull(client: PacsClient, series: SeriesMatch) -> list | None:
    try:
        return client.pull_series(series.series_uid, series.study_uid)
    except MedfewError as exc:
        _say("error", str(exc))
        return None


def store_action(client: PacsClient, workspace: Workspace) -> None:
    """*Store the reports in the PACS*: a DICOM SR and a DICOM PDF per diagnosed DICOM scan, into its study."""
    dicom = [i for i, outcome in enumerate(workspace.outcomes) if outcome.is_dicom]
    if not dicom:
        return
    if st.button(f"Store the reports of {len(dicom)} DICOM scan(s) in the PACS", key="pacs_store",
                 help="A DICOM SR and a DICOM PDF per scan, filed into the scan's study (they carry its "
                      "patient identifiers, as any object of that study)."):
        stored = 0
        identifiers = bool(st.session_state.get("include_identifiers", False))
        for index in dicom:
            outcome = workspace.outcomes[index]
            try:
                report = workspace.report(include_identifiers=identifiers, only=index)  # the notes kept by set_note
                store_report(client, report, [outcome.data])
                stored += 1
            except MedfewError as exc:
                st.error(f"{outcome.name}: {exc}")
        if stored:
            st.success(f"Stored the DICOM SR and PDF of {stored} scan(s) in their studies on "
                       f"{client.settings.display_url}.")
