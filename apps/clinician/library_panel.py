"""Case libraries, session restore and the audit trail of the clinician app (:mod:`medfew.store` behind it).

* **Autosave and restore.** Each browser gets an id in the page address (``?browser=<32 hex>``, kept
  across reloads); after every change of the support set the set is saved to the database as that
  browser's draft. A new page session with a saved draft offers to restore it (autosave waits until
  the clinician restores it or starts afresh).
* **Case libraries** (sidebar): save the support set under a name (a new version on each save), load
  one (it replaces the support set), download one as a zip, import a zip.
* **Audit trail**: every Adapt and Diagnose writes records (user from the reverse proxy's header,
  else ``"local"``; model checksum; library and version when the support set is one, unchanged).

Everything saved is what :func:`medfew.store.stored_scan` keeps: pixels as PNG, labels, sha256,
modality / body part / view. Never file names or patient identifiers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import streamlit as st
from workspace import Workspace

from medfew.errors import MedfewError
from medfew.store import (
    BROWSER_ID,
    AuditContext,
    CaseLibrary,
    Store,
    StoredScan,
    adapt_record,
    database_url,
    diagnose_records,
    export_library,
    import_library,
    stored_scan,
    support_fingerprint,
    user_from_headers,
    write_audit,
)

Fingerprint = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]
"""A support set's classes and ``(label, pixel sha256)`` per scan: equal fingerprints, equal sets."""


@st.cache_resource(show_spinner="Opening the case-library database...")
def open_store(url: str) -> Store:
    """The database, opened (and upgraded) once per server process; drafts untouched for 30 days are purged."""
    store = Store(url)
    store.purge_drafts()
    return store


def library_panel(workspace: Workspace) -> None:
    """Restore offer (main area), case libraries (sidebar), autosave and the audit hook of ``workspace``."""
    try:
        store = open_store(database_url())
    except MedfewError as exc:
        st.sidebar.error(f"Case libraries and the audit trail are unavailable: {exc}")
        return
    browser = browser_id()
    workspace.on_step = lambda action: record_step(store, workspace, action)
    state = st.session_state
    if "autosaved" not in state:  # a new page session: offer this browser's draft, never overwrite it unasked
        state["autosaved"] = fingerprint(workspace)
        draft = _guarded(lambda: store.load_draft(browser))
        state["restore_offer"] = draft.describe() if draft is not None and draft.scans else None
    restore_offer(store, workspace, browser)
    sidebar(store, workspace)
    autosave(store, workspace, browser)


# ------------------------------------------------------------------------------------ ids and fingerprints
def browser_id() -> str:
    """This browser's id from the page address (``?browser=``), created on the first visit."""
    value = st.query_params.get("browser", "")
    if not BROWSER_ID.fullmatch(value):
        value = uuid.uuid4().hex
        st.query_params["browser"] = value
    return value


def fingerprint(workspace: Workspace) -> Fingerprint:
    scans = tuple((scan.label, view.loaded.sha256) for view, scan in zip(workspace.views, workspace.session.support))
    return tuple(workspace.session.class_names), scans


def library_scans(workspace: Workspace) -> list[StoredScan]:
    """The support scans in library form, encoded once per scan and page session."""
    cache: dict[str, StoredScan] = st.session_state.setdefault("stored_scans", {})
    scans = []
    for view, scan in zip(workspace.views, workspace.session.support):
        key = f"{scan.label}\n{view.loaded.sha256}"
        if key not in cache:
            cache[key] = stored_scan(scan.label, view.loaded)
        scans.append(cache[key])
    return scans


def _guarded(action: Callable[[], object]) -> object:
    """Run a database action; a failure becomes a message on the page (the work on screen stays)."""
    try:
        return action()
    except MedfewError as exc:
        _say("error", f"Database: {exc}")
        return None


def _say(kind: str, text: str) -> None:
    st.session_state.setdefault("library_messages", []).append((kind, text))


# ------------------------------------------------------------------------------------ restore and autosave
def restore_offer(store: Store, workspace: Workspace, browser: str) -> None:
    offer = st.session_state.get("restore_offer")
    if not offer:
        return
    with st.container(border=True):
        st.info(f"This browser has an unsaved session: {offer.removeprefix('unsaved session: ')}. Restore it, "
                "start afresh, or load a case library in the sidebar. Changes are autosaved once you choose.")
        left, right, _ = st.columns([1, 1, 3])
        left.button("Restore session", key="restore_session", type="primary",
                    on_click=restore_draft, args=(store, workspace, browser))
        right.button("Start afresh", key="discard_session", on_click=discard_draft, args=(store, browser))


def restore_draft(store: Store, workspace: Workspace, browser: str) -> None:
    draft = _guarded(lambda: store.load_draft(browser))
    st.session_state["restore_offer"] = None
    if isinstance(draft, CaseLibrary):
        load_into(workspace, draft, "Restored")


def discard_draft(store: Store, browser: str) -> None:
    _guarded(lambda: store.delete_draft(browser))
    st.session_state["restore_offer"] = None


def autosave(store: Store, workspace: Workspace, browser: str) -> None:
    """Save the support set as this browser's draft when it changed (not while a restore is offered)."""
    state = st.session_state
    current = fingerprint(workspace)
    if state.get("restore_offer") or current == state.get("autosaved"):
        return
    classes, scans = current
    if scans:
        _guarded(lambda: store.save_draft(browser, classes, library_scans(workspace)))
    else:  # nothing worth restoring
        _guarded(lambda: store.delete_draft(browser))
    state["autosaved"] = current


def load_into(workspace: Workspace, library: CaseLibrary, verb: str) -> None:
    """Replace the support set by ``library``'s classes and scans (decoded from its PNGs)."""
    for name in list(workspace.session.class_names):
        workspace.remove_class(name)
    for name in library.classes:
        workspace.add_class(name)
    cache: dict[str, StoredScan] = st.session_state.setdefault("stored_scans", {})
    problems = []
    for number, scan in enumerate(library.scans, start=1):
        cache[f"{scan.label}\n{scan.sha256}"] = scan  # re-saving keeps modality / body part / view
        problems += workspace.add_uploads([(f"{library.name or 'scan'} #{number}.png", scan.png)], scan.label)
    for message in problems:
        _say("error", message)
    what = f"case library {library.name!r} version {library.version}" if library.name else "your unsaved session"
    _say("success", f"{verb} {what}: {len(library.scans) - len(problems)} scans.")
    st.session_state["autosaved"] = fingerprint(workspace) if not library.name else None
    st.session_state["library_origin"] = ((library.name, library.version, fingerprint(workspace))
                                          if library.name else None)


# ------------------------------------------------------------------------------------ sidebar
def sidebar(store: Store, workspace: Workspace) -> None:
    with st.sidebar:
        st.header("Case libraries")
        for kind, text in st.session_state.pop("library_messages", []):
            getattr(st, kind)(text)
        st.text_input("Name of the library", key="library_name", placeholder="e.g. Pneumocystis vs Streptococcus, CXR")
        st.button("Save support set as library", key="save_library", disabled=not workspace.views,
                  on_click=save_library, args=(store, workspace),
                  help="Saves the decoded scans, their classes and modality / body part / view only: no files, "
                       "file names or patient identifiers. Saving under an existing name adds a version.")
        libraries = _guarded(store.list_libraries) or []
        if not libraries:
            st.caption("No case library saved on this server yet.")
        else:
            labels = {f"{lib.describe()}": lib for lib in libraries}
            choice = st.selectbox("Saved libraries", list(labels), key="library_choice")
            chosen = labels[choice]
            st.button("Load library", key="load_library", on_click=load_library, args=(store, workspace, chosen),
                      help="Replaces the current classes and scans.")
            st.download_button("Download library (.zip)", key="download_library", on_click="ignore",
                               data=lambda: export_library(store.load_library(chosen.name, chosen.version)),
                               file_name=f"{_file_stem(chosen.name)}-v{chosen.version}.zip", mime="application/zip")
        if st.toggle("Import a library from a zip", key="library_import"):  # the uploader only when asked for
            import_step(store)


def import_step(store: Store) -> None:
    """A library zip uploader and its Import button."""
    generation = st.session_state.setdefault("library_uploader", 0)
    upload = st.file_uploader("Library zip (from Download library)", type=["zip"], key=f"library_zip_{generation}")
    if st.button("Import library", key="import_library", disabled=upload is None) and upload is not None:
        try:
            library = import_library(store, upload.getvalue(), upload.name, user=current_user())
            _say("success", f"Imported {library.describe()}.")
        except MedfewError as exc:
            _say("error", f"Not imported: {exc}")
        st.session_state["library_uploader"] = generation + 1
        st.rerun()


def save_library(store: Store, workspace: Workspace) -> None:
    name = st.session_state.get("library_name", "")
    scans = library_scans(workspace)
    try:
        library = store.save_library(name, workspace.session.class_names, scans, user=current_user())
    except MedfewError as exc:
        _say("error", f"Not saved: {exc}")
        return
    st.session_state["library_origin"] = (library.name, library.version, fingerprint(workspace))
    _say("success", f"Saved {library.describe()}.")


def load_library(store: Store, workspace: Workspace, chosen: CaseLibrary) -> None:
    library = _guarded(lambda: store.load_library(chosen.name, chosen.version))
    if isinstance(library, CaseLibrary):
        st.session_state["restore_offer"] = None
        load_into(workspace, library, "Loaded")


def _file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-")[:60] or "library"


# ------------------------------------------------------------------------------------ audit trail
def current_user() -> str:
    """The user the reverse proxy signed in (forwarded header), else ``"local"``."""
    return user_from_headers(dict(st.context.headers))


def record_step(store: Store, workspace: Workspace, action: str) -> None:
    """Write the audit records of the Adapt or Diagnose that just ran (a failure is shown, results stay)."""
    current = fingerprint(workspace)
    origin = st.session_state.get("library_origin")
    library = origin[:2] if origin and origin[2] == current else (None, None)
    info = workspace.session.info
    context = AuditContext(user=current_user(), model_sha256=info.weights_sha256 if info else "unknown",
                           support_sha256=support_fingerprint(current[1]),
                           support_counts=workspace.session.support_counts(),
                           library_name=library[0], library_version=library[1])
    records = ([adapt_record(context)] if action == "adapt"
               else diagnose_records(context, [o.prediction for o in workspace.outcomes]))
    try:
        write_audit(store, records)
    except MedfewError as exc:
        st.error(f"This {action} was not recorded in the audit trail: {exc}")
