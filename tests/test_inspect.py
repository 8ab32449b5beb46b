"""Inspect: class folders, flat DICOM folders, CSVs, .npz and catalogue names; every problem reported."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_dicom, write_image

from medfew.data.sources.catalog import dataset_info
from medfew.data.sources.inspect import inspect_path
from medfew.data.sources.inspection_report import InspectionReport
from medfew.errors import DatasetNotFoundError, ManifestError


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Class folders with good files and every kind of broken one."""
    root = tmp_path / "mixed"
    write_image(root / "benign" / "1.png")
    write_image(root / "benign" / "deep" / "2.jpg", (40, 40), "JPEG")
    write_dicom(root / "malignant" / "IM0001", modality="MR", size=24)
    (root / "malignant" / "garbage.png").write_bytes(b"\x13\x37 random garbage bytes \x00\xff" * 4)
    (root / "malignant" / "empty.png").write_bytes(b"")
    big = write_image(tmp_path / "big.png", (300, 300)).read_bytes()
    (root / "malignant" / "truncated.png").write_bytes(big[: len(big) // 3])
    (root / "malignant" / "noext").write_text("not an image")
    (root / "benign" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1\x00")
    write_image(root / "__MACOSX" / "benign" / "._1.png")
    (root / "empty_class").mkdir()
    (root / "README.txt").write_text("about this folder")
    return root


def _problems(report: InspectionReport) -> dict[str, str]:
    return {p: r for p, r in report.problems}


def test_class_folder_reports_each_broken_file_and_counts_only_good_ones(mixed: Path) -> None:
    report = inspect_path(mixed)
    assert report.kind == "class_folder" and report.name == "mixed"
    assert [(c.name, c.n_images) for c in report.classes] == [("benign", 2), ("empty_class", 0), ("malignant", 1)]
    assert report.n_images == 3
    problems = _problems(report)
    assert set(problems) == {"malignant/garbage.png", "malignant/empty.png", "malignant/truncated.png", "malignant/noext"}
    assert "empty" in problems["malignant/empty.png"]
    assert "not a recognised image format" in problems["malignant/garbage.png"]
    assert report.ignored == (("README.txt", "not inside a class folder"),)
    assert report.modalities == {"png": 1, "jpeg": 1, "MR": 1}
    assert report.formats == {"png": 1, "jpeg": 1, "dicom": 1}
    summary = report.size_summary()
    assert summary["min"] == [24, 24] and summary["max"] == [40, 40]
    assert summary["histogram"] == {"<=64": 3, "65-256": 0, "257-1024": 0, ">1024": 0}


def test_to_dict_is_json_and_lists_empty_classes(mixed: Path) -> None:
    data = inspect_path(mixed).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert {"name": "empty_class", "n_images": 0, "splits": {}, "n_groups": None} in data["classes"]
    assert [p["path"] for p in data["problems"]] == sorted(_problems(inspect_path(mixed)))  # sorted by path
    assert data["problems"][1]["path"] == "malignant/garbage.png"
    assert all(set(p) == {"path", "reason"} for p in data["problems"])
    assert "Doe^Jane" not in json.dumps(data)


def test_format_text_is_a_readable_table(mixed: Path) -> None:
    text = inspect_path(mixed).format_text()
    assert text.splitlines()[0].endswith("(class_folder): 3 usable image(s) in 3 class(es)")
    assert any(line.split() == ["empty_class", "0"] for line in text.splitlines())
    assert "problems: 4" in text and "malignant/truncated.png:" in text
    assert "modalities: png 1, jpeg 1, MR 1" in text
    assert "Doe^Jane" not in text


def test_header_mode_still_catches_broken_files(mixed: Path) -> None:
    report = inspect_path(mixed, decode=False)
    assert [(c.name, c.n_images) for c in report.classes] == [("benign", 2), ("empty_class", 0), ("malignant", 1)]
    assert set(_problems(report)) == {"malignant/garbage.png", "malignant/empty.png", "malignant/truncated.png", "malignant/noext"}
    assert report.size_summary()["max"] == [40, 40]


def test_flat_dicom_folder_has_no_classes(tmp_path: Path) -> None:
    write_dicom(tmp_path / "a.dcm", modality="CT", size=16)
    write_dicom(tmp_path / "b", modality="MR", size=32)
    write_dicom(tmp_path / "c", modality="MR", size=20)
    (tmp_path / "d.dcm").write_bytes(b"DICM?")
    report = inspect_path(tmp_path)
    assert report.kind == "flat_folder" and report.classes == ()
    assert report.n_images == 3 and report.modalities == {"MR": 2, "CT": 1}
    assert list(_problems(report)) == ["d.dcm"]
    assert report.size_summary()["min"] == [16, 16] and report.size_summary()["max"] == [32, 32]
    assert report.to_dict()["classes"] == []


def test_real_dicom_samples(data_root: Path) -> None:
    report = inspect_path(data_root / "dicom_samples", decode=False)
    assert report.kind == "flat_folder" and report.classes == ()
    assert report.problems == ()
    assert report.n_images == 14 and report.formats == {"dicom": 14}
    assert set(report.modalities) == {"CT", "MR", "CR", "US", "NM"}
    assert report.size_summary()["min"] == [16, 16]


def test_csv_manifest_reports_missing_files_and_splits_and_groups(tmp_path: Path) -> None:
    for name in ("a1", "a2", "b1"):
        write_image(tmp_path / f"{name}.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    (tmp_path / "m.csv").write_text(
        "path,label,group,split\na1.png,a,p1,train\na2.png,a,p2,test\nb1.png,b,p3,train\n"
        "gone.png,b,p4,train\nbad.png,b,p5,train\n"
    )
    report = inspect_path(tmp_path / "m.csv")
    assert report.kind == "csv" and report.n_images == 3 and report.n_groups == 3
    assert report.splits == {"train": 2, "test": 1}
    a, b = report.classes
    assert (a.name, a.n_images, a.splits, a.n_groups) == ("a", 2, {"train": 1, "test": 1}, 2)
    assert (b.name, b.n_images, b.splits, b.n_groups) == ("b", 1, {"train": 1, "test": 0}, 1)
    problems = _problems(report)
    assert set(problems) == {"gone.png", "bad.png"}
    assert problems["gone.png"].startswith("row 4: missing file")
    text = report.format_text()
    assert text.splitlines()[2].split() == ["class", "images", "train", "test", "groups"]


def test_unreadable_csv_structure_still_raises(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,label\nx.png,a\n")
    with pytest.raises(ManifestError, match=r"missing required column\(s\) \['path'\]"):
        inspect_path(tmp_path / "m.csv")


def test_npz_file(tmp_path: Path) -> None:
    arrays = {}
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = np.zeros((n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3)[:, None].astype(np.uint8)
    del arrays["val_images"]
    np.savez(tmp_path / "toy.npz", **arrays)
    report = inspect_path(tmp_path / "toy.npz")
    assert report.kind == "npz" and report.n_images == 8
    assert report.splits == {"train": 5, "test": 3}
    assert [(c.name, c.n_images) for c in report.classes] == [("0", 3), ("1", 3), ("2", 2)]
    assert report.problems[0][0] == "toy.npz" and "val_images" in report.problems[0][1]
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    broken = inspect_path(tmp_path / "broken.npz")
    assert broken.n_images == 0 and len(broken.problems) == 3


def test_medmnist_catalogue_name(data_root: Path) -> None:
    report = inspect_path("bloodmnist", data_root=data_root)
    info = dataset_info("bloodmnist")
    assert report.kind == "catalog:medmnist" and report.n_images == 17092
    assert report.splits == {"train": 11959, "val": 1712, "test": 3421}
    assert [c.name for c in report.classes] == list(info.class_names)
    assert tuple(c.splits["train"] for c in report.classes) == info.class_counts["train"]
    assert report.modalities == {info.modality: 17092} and report.problems == ()


def test_catalogue_dataset_missing_from_the_data_root_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    report = inspect_path("organamnist", data_root=tmp_path)
    assert report.n_images == 0 and len(report.classes) == 11
    assert all(c.n_images == 0 for c in report.classes)
    assert "medfew data fetch organamnist" in report.problems[0][1]
    covid = inspect_path("covid_chestxray_rare", data_root=tmp_path)
    assert covid.n_images == 0 and "metadata CSV" in covid.problems[0][1]


def test_covid_catalogue_name_in_header_mode(data_root: Path) -> None:
    info = dataset_info("covid_chestxray_rare")
    report = inspect_path("covid_chestxray_rare", data_root=data_root, decode=False)
    assert report.kind == "catalog:folder_csv" and report.n_images == 91 and report.problems == ()
    assert [(c.name, c.n_images) for c in report.classes] == list(zip(info.class_names, info.class_counts["all"]))
    assert report.n_groups == 62 and all(c.n_groups >= 1 for c in report.classes)
    assert report.formats == {"jpeg": 56, "png": 35}


@pytest.mark.slow
def test_covid_folder_fully_decoded(data_root: Path) -> None:
    report = inspect_path(data_root / "covid_chestxray_ieee8023_rare")
    assert report.kind == "class_folder" and report.n_images == 91 and report.problems == ()
    assert len(report.classes) == 11
    assert report.ignored == (("metadata_subset.csv", "not inside a class folder"),)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"nope' is not an existing folder, \.csv or \.npz file, nor a catalogue name"):
        inspect_path(tmp_path / "nope")


# --- entries that are not regular image files (issue 11) --------------------------------------------------


def _add_unusable_entries(folder: Path) -> None:
    """A broken link, a link loop, a FIFO, a folder named like an image, and three kinds of .npz."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dangling.png").symlink_to(folder / "no_such_target.png")
    (folder / "loop.dcm").symlink_to(folder / "loop.dcm")
    os.mkfifo(folder / "pipe.dcm")
    write_image(folder / "scan.png" / "inner.png")
    np.savez(folder / "objects.npz", image=np.array([{"a": 1}, None], dtype=object))
    np.savez(folder / "two.npz", a=np.zeros((16, 16)), b=np.zeros((16, 16)))
    np.savez(folder / "single.npz", image=np.zeros((16, 16), dtype=np.uint8))


UNUSABLE_REASONS = {
    "dangling.png": "broken symbolic link: its target does not exist",
    "loop.dcm": "symbolic link loop: it never reaches a file",
    "pipe.dcm": "not a regular file: a FIFO (named pipe)",
    "scan.png": "a folder named like an image file, not an image",
}


def test_flat_folder_lists_links_fifos_and_image_named_folders(tmp_path: Path) -> None:
    write_image(tmp_path / "flat" / "good.png")
    _add_unusable_entries(tmp_path / "flat")
    report = inspect_path(tmp_path / "flat")  # the scan.png/ folder does not make it a class folder
    assert report.kind == "flat_folder" and report.n_images == 1
    problems = _problems(report)
    for name, reason in UNUSABLE_REASONS.items():
        assert problems[name] == reason
    assert "holds Python objects (pickled): refused" in problems["objects.npz"]
    assert "must hold exactly one array, found 2" in problems["two.npz"]
    assert problems["single.npz"].startswith("a NumPy .npz array: dataset folders take image files")
    assert len(problems) == 7


def test_class_folder_lists_links_fifos_and_image_named_folders(tmp_path: Path) -> None:
    write_image(tmp_path / "root" / "benign" / "good.png")
    _add_unusable_entries(tmp_path / "root" / "malignant")
    report = inspect_path(tmp_path / "root")
    problems = _problems(report)
    for name, reason in UNUSABLE_REASONS.items():
        assert problems[f"malignant/{name}"] == reason
    assert "holds Python objects (pickled): refused" in problems["malignant/objects.npz"]
    assert "must hold exactly one array, found 2" in problems["malignant/two.npz"]
