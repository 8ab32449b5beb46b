"""Manifests: class-per-folder, CSV and catalogue builders, and every validation branch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_dicom, write_png

from medfew.data.sources.catalog import dataset_info
from medfew.data.sources.folder_entries import classify_file
from medfew.data.sources.manifest import (
    Manifest,
    ManifestRow,
    manifest_from_catalog,
    manifest_from_csv,
    manifest_from_folder,
)
from medfew.errors import DatasetNotFoundError, ManifestError

REPO_MANIFESTS = Path(__file__).resolve().parents[1] / "data_manifests"


# ------------------------------------------------------------------------------------- folder


def test_folder_manifest_takes_each_subfolder_as_a_class(tmp_path: Path) -> None:
    write_png(tmp_path / "benign" / "a.png")
    write_png(tmp_path / "benign" / "nested" / "deeper" / "b.png")
    write_dicom(tmp_path / "malignant" / "IM0001")  # DICOM without extension, recognised by content
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "benign" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    write_png(tmp_path / "__MACOSX" / "benign" / "._a.png")
    write_png(tmp_path / ".hidden_class" / "x.png")
    (tmp_path / "malignant" / "notes").write_text("reviewed by Dr X")
    (tmp_path / "labels.csv").write_text("path,label\n")

    manifest = manifest_from_folder(tmp_path, name="toy")
    assert manifest.class_names == ("benign", "empty_class", "malignant")
    assert manifest.name == "toy" and len(manifest) == 3
    assert [(r.path.relative_to(tmp_path).as_posix(), r.label) for r in manifest] == [
        ("benign/a.png", "benign"),
        ("benign/nested/deeper/b.png", "benign"),
        ("malignant/IM0001", "malignant"),
    ]
    assert manifest.class_counts() == {"benign": 2, "empty_class": 0, "malignant": 1}
    assert all(r.group is None and r.split is None and r.source == "toy" for r in manifest)
    assert not manifest.has_groups and manifest.splits == ()
    ignored = {Path(p).name: reason for p, reason in manifest.ignored}
    assert set(ignored) == {"notes", "labels.csv"}  # .DS_Store and __MACOSX are skipped silently
    assert ignored["labels.csv"] == "not inside a class folder"
    assert "not a recognised image format" in ignored["notes"]


def test_folder_manifest_keeps_broken_files_with_image_suffix_for_the_decoder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "garbage.png").write_bytes(b"not an image at all")
    (tmp_path / "a" / "empty").write_bytes(b"")
    manifest = manifest_from_folder(tmp_path)
    assert [r.path.name for r in manifest] == ["garbage.png"]
    assert [(Path(p).name, r) for p, r in manifest.ignored] == [("empty", "empty file (0 bytes)")]


def test_folder_manifest_survives_a_symlink_loop(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "1.png")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    manifest = manifest_from_folder(tmp_path)
    assert [r.path.name for r in manifest] == ["1.png"]


def test_classify_file(tmp_path: Path) -> None:
    assert classify_file(write_png(tmp_path / "x.PNG")) == (True, "")
    assert classify_file(write_dicom(tmp_path / "scan")) == (True, "")
    np.savez(tmp_path / "arrays", a=np.zeros(3))
    (tmp_path / "arrays.npz").rename(tmp_path / "arrays")
    is_image, reason = classify_file(tmp_path / "arrays")
    assert not is_image and reason == "a npz file, not an image"


def test_folder_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"missing: not a folder"):
        manifest_from_folder(tmp_path / "missing")
    write_png(tmp_path / "flat.png")
    with pytest.raises(ManifestError, match=r"no class subfolders"):
        manifest_from_folder(tmp_path)


# ---------------------------------------------------------------------------------------- CSV


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for name in ("a1", "a2", "b1", "b2"):
        write_png(tmp_path / "img" / f"{name}.png")
    return tmp_path


def test_csv_manifest_with_groups_and_splits(images: Path) -> None:
    csv_path = _csv(
        images / "m.csv",
        "path,label,group,split\nimg/a1.png,a,p1,train\nimg/a2.png,a,p1,train\nimg/b1.png,b,,test\n"
        "img/b2.png, b ,p2,test\n",
    )
    manifest = manifest_from_csv(csv_path)
    assert manifest.name == "m" and manifest.class_names == ("a", "b")
    assert manifest.index_files == (csv_path.resolve(),)
    assert [r.group for r in manifest] == ["p1", "p1", None, "p2"]
    assert [r.label for r in manifest][-1] == "b"  # whitespace stripped
    assert manifest.splits == ("train", "test") and manifest.has_groups
    test = manifest.select_split("test")
    assert [r.path.name for r in test] == ["b1.png", "b2.png"]
    assert manifest.select_split("all") is manifest
    with pytest.raises(ManifestError, match=r"unknown split 'val'; this manifest has: \['all', 'train', 'test'\]"):
        manifest.select_split("val")


def test_csv_paths_relative_to_root_and_classes_order(images: Path) -> None:
    elsewhere = images / "lists"
    elsewhere.mkdir()
    csv_path = _csv(elsewhere / "m.csv", "label,path\nb,b1.png\na,a1.png\n")
    manifest = manifest_from_csv(csv_path, root=images / "img", classes=["b", "a", "c"])
    assert manifest.class_names == ("b", "a", "c")
    assert manifest.rows[0] == ManifestRow(path=(images / "img" / "b1.png").resolve(), label="b", source="m")
    assert manifest.label_index(manifest.rows[1]) == 1
    absolute = _csv(elsewhere / "abs.csv", f"path,label\n{(images / 'img' / 'a1.png').resolve()},a\n")
    assert manifest_from_csv(absolute).rows[0].path == (images / "img" / "a1.png").resolve()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("img/a1.png,a\nimg/zz.png,a\n", r"m\.csv, row 2: missing file '.*zz\.png'"),
        ("img/a1.png,a\nimg/a2.png,\n", r"m\.csv, row 2: empty label"),
        (",a\n", r"m\.csv, row 1: empty path"),
        ("img/a1.png,a\nimg/b1.png,c\n", r"m\.csv, row 2: unknown label 'c'; known labels: \['a', 'b'\]"),
        ("img/a1.png,bb\n", r"row 1: unknown label 'bb' \(did you mean 'b'\?\)"),
        ("img/a1.png,a\nimg/b1.png,b\n./img/a1.png,a\n", r"row 3: duplicate path '.*a1\.png' \(first listed in row 1\)"),
    ],
)
def test_csv_row_errors_name_the_row(images: Path, body: str, message: str) -> None:
    csv_path = _csv(images / "m.csv", "path,label\n" + body)
    with pytest.raises(ManifestError, match=message):
        manifest_from_csv(csv_path, classes=["a", "b"])


def test_csv_group_in_two_splits_is_refused_without_quoting_the_patient_id(images: Path) -> None:
    csv_path = _csv(
        images / "m.csv",
        "path,label,group,split\nimg/a1.png,a,PAT-0042,train\nimg/b1.png,b,PAT-0007,val\nimg/a2.png,a,PAT-0042,test\n",
    )
    with pytest.raises(ManifestError, match=r"row 3: group \(patient\) of this row is in split 'test' but row 1") as info:
        manifest_from_csv(csv_path)
    assert "PAT-0042" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label,patient\nimg/a1.png,a,p\n", r"unknown column\(s\) \['patient'\]; allowed: \['path', 'label', 'group', 'split'\]"),
        ("path,group\nimg/a1.png,p\n", r"missing required column\(s\) \['label'\]"),
        ("path,label,label\nimg/a1.png,a,a\n", r"duplicate column names"),
        ("path,label\n", r"no data rows below the header"),
        ("", r"empty file"),
        ("path,label\nimg/a1.png,a,extra\n", r"row 1: has 3 fields but the header has 2"),
        ("path,label,split\nimg/a1.png,a,training\n", r"row 1: unknown split 'training'; expected one of \['train', 'val', 'test'\]"),
    ],
)
def test_csv_structure_errors(images: Path, text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        manifest_from_csv(_csv(images / "m.csv", text))


def test_csv_not_found_or_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nope\.csv: file not found"):
        manifest_from_csv(tmp_path / "nope.csv")
    (tmp_path / "bin.csv").write_bytes(b"path,label\n\xff\xfe\xfa,a\n")
    with pytest.raises(ManifestError, match=r"bin\.csv: not a readable UTF-8 CSV"):
        manifest_from_csv(tmp_path / "bin.csv")


def test_csv_lenient_mode_collects_bad_rows(images: Path) -> None:
    csv_path = _csv(
        images / "m.csv",
        "path,label,group,split\nimg/a1.png,a,p1,train\nimg/zz.png,a,,train\nimg/b1.png,,,\n"
        "img/a1.png,a,p1,train\nimg/b2.png,b,p1,test\n",
    )
    manifest = manifest_from_csv(csv_path, strict=False)
    assert [r.path.name for r in manifest] == ["a1.png"]
    reasons = [reason for _, reason in manifest.ignored]
    assert reasons[0].startswith("row 2: missing file")
    assert reasons[1] == "row 3: empty label"
    assert reasons[2].startswith("row 4: duplicate path")
    assert reasons[3].startswith("row 5: group (patient) of this row is in split 'test'")
    assert manifest.class_names == ("a", "b")


# ---------------------------------------------------------------------------------- catalogue


def test_covid_catalogue_manifest(data_root: Path) -> None:
    info = dataset_info("covid_chestxray_rare")
    manifest = manifest_from_catalog("covid_chestxray_rare", data_root)
    assert isinstance(manifest, Manifest)
    assert len(manifest) == 91 and manifest.class_names == info.class_names
    assert tuple(manifest.class_counts().values()) == info.class_counts["all"]
    assert manifest.has_groups and all(r.group for r in manifest)
    assert len({r.group for r in manifest}) == 62
    assert all(r.split is None for r in manifest) and manifest.splits == ()
    assert all(r.path.is_file() and r.path.parent.name == r.label for r in manifest)
    with pytest.raises(ManifestError, match=r"unknown split 'train'; this manifest has: \['all'\]"):
        manifest.select_split("train")


def test_catalogue_manifest_refuses_medmnist(data_root: Path) -> None:
    with pytest.raises(ManifestError, match=r"dataset 'bloodmnist' is 'medmnist', not folder_csv"):
        manifest_from_catalog("bloodmnist", data_root)


@pytest.fixture
def toy_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder_csv catalogue entry ``toyrare`` over a synthetic data root; returns the root."""
    entry = json.loads((REPO_MANIFESTS / "covid_chestxray_rare.json").read_text())
    entry.update(
        name="toyrare",
        class_names=["a", "b"],
        splits={"all": 2},
        class_counts={"all": [1, 1]},
        folder="toy",
        metadata_csv={"path": "toy/meta.csv"},
    )
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "toyrare.json").write_text(json.dumps(entry))
    monkeypatch.setenv("MEDFEW_MANIFEST_DIR", str(manifests))
    root = tmp_path / "root"
    write_png(root / "toy" / "a" / "1.png")
    write_png(root / "toy" / "b" / "2.png")
    return root


def test_catalogue_manifest_row_errors(toy_catalogue: Path) -> None:
    meta = toy_catalogue / "toy" / "meta.csv"
    meta.write_text("class_folder,filename,patientid,license\na,1.png,7,CC BY\nb,2.png,8,\n")
    manifest = manifest_from_catalog("toyrare", toy_catalogue)
    assert [r.group for r in manifest] == ["7", "8"]
    meta.write_text("class_folder,filename,patientid\na,1.png,7\nb,3.png,8\n")
    with pytest.raises(ManifestError, match=r"meta\.csv, row 2: missing file '.*b/3\.png'"):
        manifest_from_catalog("toyrare", toy_catalogue)
    meta.write_text("class_folder,filename,patientid\nc,1.png,7\n")
    with pytest.raises(ManifestError, match=r"row 1: unknown label 'c'"):
        manifest_from_catalog("toyrare", toy_catalogue)
    meta.write_text("class_folder,file,patientid\na,1.png,7\n")
    with pytest.raises(ManifestError, match=r"missing column\(s\) \['filename'\] named by .*toyrare\.json"):
        manifest_from_catalog("toyrare", toy_catalogue)
    meta.unlink()
    with pytest.raises(DatasetNotFoundError, match=r"dataset 'toyrare': metadata CSV .*meta\.csv' not found"):
        manifest_from_catalog("toyrare", toy_catalogue)
