"""medfew.store: case libraries in a real SQLite file, migrations, privacy, zip export / import, the CLI."""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from synthetic import (
    FAKE_PATIENT_ID,
    FAKE_PATIENT_NAME,
    dicom_dataset,
    save_dicom,
    write_image,
)

from medfew.cli import main
from medfew.diagnosis import load_input
from medfew.store import (
    LibraryImportError,
    Store,
    StoreError,
    export_library,
    head_revision,
    import_library,
    migrate,
    stored_scan,
)
from medfew.store.database import create_database_engine

IDENTIFIERS = {
    "PatientName": "Smithson^Margaretha",
    "PatientID": "MRN-77340912",
    "PatientBirthDate": "19470312",
    "AccessionNumber": "ACC-55120987",
    "StudyDate": "20250611",
    "SeriesDate": "20250612",
    "InstitutionName": "Saint Winifred Hospital",
    "ReferringPhysicianName": "Okonkwo^Adaeze",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.77341",
}
BROWSER = "0123456789abcdef0123456789abcdef"


def identified_dicoms(folder: Path) -> list[Path]:
    """Four 12-bit CR chest radiographs full of identifiers, in files named after the patient."""
    rng = np.random.default_rng(7)
    paths = []
    for index in range(4):
        ds = dicom_dataset(rng.integers(0, 4096, (40, 40), dtype=np.uint16), modality="CR", bits_stored=12,
                           BodyPartExamined="CHEST", ViewPosition="PA", **IDENTIFIERS)
        paths.append(save_dicom(ds, folder / f"Smithson_Margaretha_{index}.dcm"))
    return paths


def database_bytes(path: Path) -> bytes:
    """The database file and any journal / WAL / shared-memory file beside it."""
    files = sorted(path.parent.glob(path.name + "*"))
    assert path in files
    return b"".join(f.read_bytes() for f in files)


@pytest.fixture
def db(tmp_path: Path) -> tuple[Store, Path]:
    path = tmp_path / "medfew.db"
    return Store(f"sqlite:///{path}"), path


def library_scans(tmp_path: Path):
    dicoms = identified_dicoms(tmp_path / "in")
    images = [write_image(tmp_path / "in" / f"Smithson_rgb_{i}.png", size=(30 + i, 20)) for i in range(2)]
    labelled = [("Pneumocystis", p) for p in dicoms[:2]] + [("Streptococcus", p) for p in dicoms[2:] + images]
    return [stored_scan(label, load_input(path)) for label, path in labelled], labelled


def test_library_keeps_pixels_labels_and_three_fields_but_no_identifier(db, tmp_path: Path) -> None:
    store, path = db
    scans, labelled = library_scans(tmp_path)
    saved = store.save_library("Pneumocystis vs Streptococcus, CXR", ["Pneumocystis", "Streptococcus"], scans,
                               user="dr.amsel")
    store.save_draft(BROWSER, ["Pneumocystis", "Streptococcus"], scans[:3])
    assert (saved.name, saved.version, saved.counts) == ("Pneumocystis vs Streptococcus, CXR", 1,
                                                         {"Pneumocystis": 2, "Streptococcus": 4})
    loaded = store.load_library("Pneumocystis vs Streptococcus, CXR")
    assert [s.label for s in loaded.scans] == [label for label, _ in labelled]
    first = loaded.scans[0]
    assert (first.modality, first.body_part, first.view) == ("CR", "CHEST", "PA")
    assert loaded.scans[-1].modality is None
    for scan, (_, source) in zip(loaded.scans, labelled, strict=True):
        image = scan.image()
        assert image.sha256 == scan.sha256
        original = load_input(source).pixels
        assert image.pixels.shape == original.shape and np.abs(image.pixels - original).max() <= 0.5 / 65535 + 1e-7
    assert loaded.scans[-1].sha256 == load_input(labelled[-1][1]).sha256  # 8-bit images: exactly the same pixels
    content = database_bytes(path)
    forbidden = [*IDENTIFIERS.values(), FAKE_PATIENT_NAME, FAKE_PATIENT_ID, "Smithson", "Margaretha", "1947",
                 "Winifred", "Okonkwo", ".dcm", "Smithson_rgb"]
    for text in forbidden:
        for encoding in ("utf-8", "utf-16-le"):
            assert text.encode(encoding) not in content, text
    assert b"CHEST" in content and b"Pneumocystis" in content  # what a library may hold is there


def test_versions_list_load_delete_and_unused_pixels_go(db, tmp_path: Path) -> None:
    store, path = db
    scans, _ = library_scans(tmp_path)
    store.save_library("Rare CXR", ["Pneumocystis", "Streptococcus"], scans[:4])
    second = store.save_library(" Rare CXR ", ["Pneumocystis", "Streptococcus", "Normal"], scans)
    store.save_library("Brain MRI", ["Streptococcus"], scans[4:])
    assert second.version == 2
    assert [(lib.name, lib.version) for lib in store.list_libraries()] == [("Brain MRI", 1), ("Rare CXR", 2)]
    assert len(store.list_libraries(all_versions=True)) == 3
    assert store.load_library("Rare CXR", 1).counts == {"Pneumocystis": 2, "Streptococcus": 2}
    assert store.load_library("Rare CXR").classes == ("Pneumocystis", "Streptococcus", "Normal")
    with pytest.raises(StoreError, match=r"no library 'Rare CXR' version 7 in the database; saved: 'Brain MRI', "):
        store.load_library("Rare CXR", 7)
    assert store.delete_library("Rare CXR") == 2
    with pytest.raises(StoreError, match="no library 'Rare CXR'"):
        store.delete_library("Rare CXR")
    store.delete_library("Brain MRI")
    count = sqlite3.connect(path).execute("select count(*) from images").fetchone()[0]
    assert count == 0  # pixels of deleted libraries do not linger


@pytest.mark.parametrize(("name", "classes", "match"), [
    ("", ["a"], "the library name is empty"),
    ("x" * 201, ["a"], "has 201 characters; at most 200"),
    ("bad\x00name", ["a"], "control characters"),
    ("ok", ["a", "a"], "class names repeat"),
    ("ok", ["other"], "labelled 'Pneumocystis', which is not one of the classes"),
])
def test_bad_library_requests_are_named(db, tmp_path: Path, name: str, classes: list[str], match: str) -> None:
    store, _ = db
    scans, _ = library_scans(tmp_path)
    with pytest.raises(StoreError, match=match):
        store.save_library(name, classes, scans[:1])
    assert store.list_libraries() == []


def test_draft_of_a_browser_is_replaced_and_forgotten(db, tmp_path: Path) -> None:
    store, _ = db
    scans, _ = library_scans(tmp_path)
    assert store.load_draft(BROWSER) is None
    store.save_draft(BROWSER, ["Pneumocystis", "Streptococcus"], scans[:2])
    store.save_draft(BROWSER, ["Pneumocystis", "Streptococcus"], scans[:3])
    draft = store.load_draft(BROWSER)
    assert draft is not None and draft.counts == {"Pneumocystis": 2, "Streptococcus": 1} and draft.saved_at
    store.delete_draft(BROWSER)
    assert store.load_draft(BROWSER) is None
    store.save_draft(BROWSER, ["Pneumocystis", "Streptococcus"], scans[:1])
    assert store.purge_drafts() == 0 and store.load_draft(BROWSER) is not None  # fresh drafts stay
    assert store.purge_drafts(timedelta(seconds=-1)) == 1 and store.load_draft(BROWSER) is None
    with pytest.raises(StoreError, match="32 lower-case hex digits"):
        store.load_draft("../../etc/passwd")


def test_an_older_database_is_upgraded_and_keeps_its_libraries(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = create_database_engine(f"sqlite:///{path}")
    migrate(engine, "0001")  # the first schema: libraries, no audit trail
    png = (tmp_path / "a.png")
    write_image(png, size=(24, 24))
    scan = stored_scan("Rare", load_input(png))
    with sqlite3.connect(path) as raw:  # what medfew 0001 wrote, written without today's code
        assert {r[0] for r in raw.execute("select name from sqlite_master where type='table'")} >= {"libraries"}
        assert "audit_records" not in {r[0] for r in raw.execute("select name from sqlite_master")}
        raw.execute("insert into images values (?, ?, 'CR', NULL, NULL)", (scan.sha256, scan.png))
        raw.execute("insert into support_sets (id, classes) values (1, '[\"Rare\", \"Common\"]')")
        raw.execute("insert into support_scans (set_id, position, label, image_sha256) values (1, 0, 'Rare', ?)",
                    (scan.sha256,))
        raw.execute("insert into libraries (name, version, created_at, created_by, set_id) "
                    "values ('Old library', 3, '2026-01-02 03:04:05', 'local', 1)")
    engine.dispose()
    store = Store(f"sqlite:///{path}")
    with sqlite3.connect(path) as raw:
        assert raw.execute("select version_num from alembic_version").fetchone()[0] == head_revision() == "0002"
    library = store.load_library("Old library")
    assert (library.version, library.classes, library.scans[0].sha256) == (3, ("Rare", "Common"), scan.sha256)
    assert library.scans[0].image().sha256 == scan.sha256 and library.scans[0].modality == "CR"
    assert store.save_library("Old library", ["Rare"], [scan]).version == 4


def test_a_database_from_a_newer_medfew_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Store(f"sqlite:///{path}")
    with sqlite3.connect(path) as raw:
        raw.execute("update alembic_version set version_num = '0099'")
    with pytest.raises(StoreError, match="has schema revision 0099, newer than this medfew knows"):
        Store(f"sqlite:///{path}")


def test_bad_database_url_is_named() -> None:
    with pytest.raises(StoreError, match="database URL 'nosuchdb://x'|database URL nosuchdb://x"):
        Store("nosuchdb://x")


# ------------------------------------------------------------------------------------ archives
def rezip(data: bytes, change) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    change(files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


def test_export_import_round_trip_between_two_databases(tmp_path: Path) -> None:
    here, there = Store(f"sqlite:///{tmp_path / 'here.db'}"), Store(f"sqlite:///{tmp_path / 'there.db'}")
    scans, _ = library_scans(tmp_path)
    saved = here.save_library("Pneumocystis vs Streptococcus, CXR", ["Pneumocystis", "Streptococcus"], scans,
                              user="dr.amsel")
    archive = export_library(here.load_library(saved.name))
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        names = z.namelist()
        manifest = json.loads(z.read("manifest.json"))
    assert names[:2] == ["Pneumocystis/0001.png", "Pneumocystis/0002.png"] and "manifest.json" in names
    assert "dr.amsel" not in json.dumps(manifest) and manifest["scans"][0]["body_part"] == "CHEST"
    imported = import_library(there, archive, "cxr.zip")
    assert imported.version == 1 and imported.classes == saved.classes
    assert [s.sha256 for s in there.load_library(saved.name).scans] == [s.sha256 for s in saved.scans]
    assert import_library(there, archive, "cxr.zip", name="Copy").name == "Copy"


def disguised_dicom(tmp_path: Path) -> tuple[bytes, str]:
    """A DICOM full of identifiers saved under a .png name, and the sha256 of its pixels as a library keeps them."""
    path = identified_dicoms(tmp_path / "disguised")[0]
    return path.read_bytes(), stored_scan("Rare", load_input(path)).sha256


@pytest.mark.parametrize(("change", "match"), [
    (lambda f: f.pop("manifest.json"), "cxr.zip: no manifest.json at the top of the archive"),
    (lambda f: f.update({"manifest.json": b"{not json"}), r"manifest.json: not valid JSON"),
    (lambda f: f.update({"Pneumocystis/0001.png": b"\x89PNG broken"}), "Pneumocystis/0001.png: "),
    (lambda f: f.update({"Pneumocystis/0001.png": f["Streptococcus/0006.png"]}),
     "Pneumocystis/0001.png: the pixels' sha256 .* does not match the manifest's"),
    (lambda f: f.update({"Extra/x.png": f["Streptococcus/0006.png"]}), "Extra/x.png is not listed in manifest.json"),
    (lambda f: f.update({"loose.png": b"x"}), r"cxr.zip/loose.png: is not inside a class folder"),
    (lambda f: f.pop("Streptococcus/0006.png"), "lists 'Streptococcus/0006.png', which is not in the archive"),
])
def test_a_bad_archive_is_refused_and_changes_nothing(db, tmp_path: Path, change, match: str) -> None:
    store, _ = db
    scans, _ = library_scans(tmp_path)
    archive = export_library(store.save_library("CXR", ["Pneumocystis", "Streptococcus"], scans))
    before = store.list_libraries(all_versions=True)
    with pytest.raises(LibraryImportError, match=match):
        import_library(store, rezip(archive, change), "cxr.zip")
    assert store.list_libraries(all_versions=True) == before


def test_not_a_zip_and_an_over_limit_zip_are_refused_like_an_upload(db) -> None:
    store, _ = db
    with pytest.raises(LibraryImportError, match="cxr.zip: is not a readable zip archive"):
        import_library(store, b"PK\x03\x04 not really", "cxr.zip")
    crowded = rezip(b"PK\x05\x06" + b"\x00" * 18, lambda f: f.update({f"Rare/{i}.png": b"" for i in range(5001)}))
    with pytest.raises(LibraryImportError, match="crowded.zip: holds 5001 files; at most 5000 are accepted"):
        import_library(store, crowded, "crowded.zip")
    assert store.list_libraries() == []


def test_import_reencodes_pixels_so_a_disguised_dicom_leaves_no_identifier(db, tmp_path: Path) -> None:
    store, path = db
    data, sha = disguised_dicom(tmp_path)
    manifest = {"format": "medfew-case-library", "format_version": 1, "name": "Disguised", "version": 1,
                "classes": ["Rare"], "scans": [{"path": "Rare/0001.png", "label": "Rare", "sha256": sha,
                                                "modality": "CR", "body_part": "Smithson", "view": None}]}
    archive = rezip(b"PK\x05\x06" + b"\x00" * 18, lambda f: f.update(
        {"Rare/0001.png": data, "manifest.json": json.dumps(manifest).encode()}))
    import_library(store, archive, "disguised.zip")
    content = database_bytes(path)
    assert b"Margaretha" not in content and b"MRN-77340912" not in content and b"DICM" not in content
    assert store.load_library("Disguised").scans[0].image().sha256 == sha


# ------------------------------------------------------------------------------------ CLI
def test_library_cli_list_export_import_delete(db, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, path = db
    url = f"sqlite:///{path}"
    scans, _ = library_scans(tmp_path)
    store.save_library("CXR", ["Pneumocystis", "Streptococcus"], scans)
    assert main(["library", "list", "--db", url]) == 0
    assert "CXR v1: 2 Pneumocystis, 4 Streptococcus  (saved " in capsys.readouterr().out
    out = tmp_path / "cxr.zip"
    assert main(["library", "export", "CXR", "--out", str(out), "--db", url]) == 0
    assert main(["library", "import", str(out), "--db", url]) == 0
    assert "imported CXR v2" in capsys.readouterr().out
    assert main(["library", "list", "--json", "--all-versions", "--db", url]) == 0
    assert [r["version"] for r in json.loads(capsys.readouterr().out)] == [2, 1]
    assert main(["library", "delete", "CXR", "--version", "1", "--db", url]) == 0
    assert main(["library", "delete", "CXR", "--version", "1", "--db", url]) == 2
    assert "medfew: error: no library 'CXR' version 1" in capsys.readouterr().err
    (tmp_path / "bad.zip").write_bytes(b"nope")
    assert main(["library", "import", str(tmp_path / "bad.zip"), "--db", url]) == 2
    assert "bad.zip: is not a readable zip archive" in capsys.readouterr().err
