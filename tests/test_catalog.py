"""The dataset catalogue: manifests in data_manifests/, their validation, data root and checksums."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import pytest

from medfew.data.sources.catalog import (
    DatasetInfo,
    dataset_info,
    is_catalog_name,
    list_datasets,
    manifest_dir,
    resolve_data_root,
)
from medfew.data.sources.checksums import verify_checksum
from medfew.errors import DatasetNotFoundError, ManifestError, MedfewError, RegistryError

MEDMNIST = ["bloodmnist", "breastmnist", "organamnist", "pneumoniamnist", "retinamnist"]
REPO_MANIFESTS = Path(__file__).resolve().parents[1] / "data_manifests"


def test_catalogue_lists_every_dataset_of_the_data_root() -> None:
    assert list_datasets() == sorted([*MEDMNIST, "covid_chestxray_rare"])
    assert manifest_dir() == REPO_MANIFESTS


def test_bloodmnist_entry_matches_the_data_readme() -> None:
    info = dataset_info("bloodmnist")
    assert isinstance(info, DatasetInfo)
    assert info.kind == "medmnist" and info.num_classes == 8 and info.n_channels == 3
    assert dict(info.splits) == {"train": 11959, "val": 1712, "test": 3421}
    assert info.class_counts["train"] == (852, 2181, 1085, 2026, 849, 993, 2330, 1643)
    assert info.class_names[0] == "basophil" and info.class_names[-1] == "platelet"
    assert info.licence == "CC BY 4.0"
    assert any("MedMNIST v2" in c for c in info.citation)
    spec = info.file_for_size(28)
    assert spec.path == "medmnist/bloodmnist.npz"
    assert spec.md5 == "7053d0359d879ad8a5505303e11de1dc" and spec.size_bytes == 35461855
    assert sorted(info.files) == [28, 64, 128, 224]
    assert info.url_for(64) == "https://zenodo.org/records/10519652/files/bloodmnist_64.npz?download=1"
    assert info.files[224].sha256 is None and info.files[224].md5 is not None


@pytest.mark.parametrize(
    ("name", "n_classes", "splits"),
    [
        ("organamnist", 11, {"train": 34561, "val": 6491, "test": 17778}),
        ("pneumoniamnist", 2, {"train": 4708, "val": 524, "test": 624}),
        ("retinamnist", 5, {"train": 1080, "val": 120, "test": 400}),
        ("breastmnist", 2, {"train": 546, "val": 78, "test": 156}),
    ],
)
def test_medmnist_entries_have_the_official_split_counts(name: str, n_classes: int, splits: dict) -> None:
    info = dataset_info(name)
    assert info.num_classes == n_classes
    assert dict(info.splits) == splits
    assert {s: sum(c) for s, c in info.class_counts.items()} == splits


def test_covid_entry_is_a_folder_csv_dataset_with_patient_groups() -> None:
    info = dataset_info("covid_chestxray_rare")
    assert info.kind == "folder_csv"
    assert info.num_classes == 11 and dict(info.splits) == {"all": 91}
    assert info.folder == "covid_chestxray_ieee8023_rare"
    assert info.metadata_csv is not None and info.metadata_csv.path.endswith("metadata_subset.csv")
    assert (info.label_column, info.path_columns, info.group_column) == ("class_folder", ("class_folder", "filename"), "patientid")
    assert "non-commercial" in info.licence
    assert dict(zip(info.class_names, info.class_counts["all"]))["COVID_19"] == 16
    with pytest.raises(DatasetNotFoundError, match="no per-size files"):
        info.file_for_size(28)


def test_dataset_info_is_case_insensitive_and_frozen() -> None:
    info = dataset_info("BloodMNIST")
    assert info.name == "bloodmnist"
    with pytest.raises(AttributeError):
        info.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        info.splits["train"] = 1  # type: ignore[index]


def test_unknown_dataset_lists_known_names_and_suggests_a_close_one() -> None:
    with pytest.raises(RegistryError, match=r"unknown dataset 'bloodmnst' \(did you mean 'bloodmnist'\?\); known datasets: bloodmnist"):
        dataset_info("bloodmnst")
    with pytest.raises(RegistryError, match=r"unknown dataset 'zzz'; known datasets"):
        dataset_info("zzz")


def test_is_catalog_name() -> None:
    assert is_catalog_name("organamnist")
    assert not is_catalog_name("some/organamnist")
    assert not is_catalog_name(Path("organamnist"))
    assert not is_catalog_name("nope")


def test_unknown_medmnist_size_is_refused() -> None:
    with pytest.raises(DatasetNotFoundError, match=r"no 32x32 file; sizes: \[28, 64, 128, 224\]"):
        dataset_info("breastmnist").file_for_size(32)


@pytest.mark.parametrize("name", MEDMNIST)
def test_medmnist_files_in_the_data_root_match_their_catalogue_checksums(data_root: Path, name: str) -> None:
    spec = dataset_info(name).file_for_size(28)
    path = data_root / spec.path
    assert path.stat().st_size == spec.size_bytes
    assert verify_checksum(path, spec.sha256) == "sha256"
    assert verify_checksum(path, md5=spec.md5) == "md5"


def test_covid_metadata_csv_matches_its_checksum(data_root: Path) -> None:
    spec = dataset_info("covid_chestxray_rare").metadata_csv
    assert spec is not None
    assert verify_checksum(data_root / spec.path, spec.sha256) == "sha256"


# ------------------------------------------------------------------------------------ data root


def test_resolve_data_root_prefers_the_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "env"
    other.mkdir()
    monkeypatch.setenv("MEDFEW_DATA_ROOT", str(other))
    assert resolve_data_root(tmp_path) == tmp_path.resolve()
    assert resolve_data_root(None) == other.resolve()


def test_resolve_data_root_without_argument_or_env_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDFEW_DATA_ROOT", raising=False)
    with pytest.raises(DatasetNotFoundError, match=r"pass data_root \(--data-root\) or set the environment variable MEDFEW_DATA_ROOT"):
        resolve_data_root(None)


def test_resolve_data_root_refuses_a_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"nope.*\(from data_root argument\) is not an existing folder"):
        resolve_data_root(tmp_path / "nope")
    monkeypatch.setenv("MEDFEW_DATA_ROOT", str(tmp_path / "gone"))
    with pytest.raises(DatasetNotFoundError, match=r"from \$MEDFEW_DATA_ROOT"):
        resolve_data_root(None)
    assert resolve_data_root(tmp_path / "new", must_exist=False) == (tmp_path / "new").resolve()


# ------------------------------------------------------------------------------------ checksums


def test_verify_checksum_mismatch_names_file_and_digests(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"medfew")
    sha = hashlib.sha256(b"medfew").hexdigest()
    assert verify_checksum(path, sha.upper()) == "sha256"
    with pytest.raises(MedfewError, match=rf"f\.bin: sha256 mismatch: expected {'0' * 64}, got {sha}"):
        verify_checksum(path, "0" * 64)
    with pytest.raises(MedfewError, match="md5 mismatch"):
        verify_checksum(path, md5="0" * 32)
    with pytest.raises(MedfewError, match="no checksum given"):
        verify_checksum(path)
    with pytest.raises(DatasetNotFoundError, match="missing.bin: file not found"):
        verify_checksum(tmp_path / "missing.bin", sha)


# ------------------------------------------------------------------------- manifest validation


@pytest.fixture
def manifest_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "manifests"
    folder.mkdir()
    monkeypatch.setenv("MEDFEW_MANIFEST_DIR", str(folder))
    return folder


def _valid_entry() -> dict:
    return json.loads((REPO_MANIFESTS / "breastmnist.json").read_text())


def _write(folder: Path, entry: dict, name: str = "breastmnist") -> None:
    (folder / f"{name}.json").write_text(json.dumps(entry))


def test_manifest_dir_from_env(manifest_folder: Path) -> None:
    _write(manifest_folder, _valid_entry())
    assert list_datasets() == ["breastmnist"]
    assert dataset_info("breastmnist").manifest_path == manifest_folder.resolve() / "breastmnist.json"


def test_manifest_dir_env_must_be_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDFEW_MANIFEST_DIR", str(tmp_path / "none"))
    with pytest.raises(DatasetNotFoundError, match=r"\$MEDFEW_MANIFEST_DIR=.*none.* is not an existing folder"):
        list_datasets()


def _set(entry: dict, dotted: str, value: object) -> dict:
    entry = copy.deepcopy(entry)
    *parents, last = dotted.split(".")
    target = entry
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return entry


_DELETE = object()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("schema_version", 2, r"key 'schema_version' is 2, this medfew reads 1"),
        ("name", "other", r"key 'name' is 'other' but the file is named 'breastmnist.json'"),
        ("kind", "zip", r"key 'kind' is 'zip', expected one of \['medmnist', 'folder_csv'\]"),
        ("title", _DELETE, r"missing key 'title'"),
        ("title", "  ", r"key 'title' is empty"),
        ("n_channels", 2, r"key 'n_channels' must be 1 or 3, got 2"),
        ("n_channels", "1", r"key 'n_channels' has type str, expected int"),
        ("class_names", ["a", "a"], r"key 'class_names' has duplicates"),
        ("class_names", [], r"key 'class_names' must be a non-empty list"),
        ("splits.train", -1, r"key 'splits.train' must be a non-negative integer"),
        ("splits", {"train": 546, "val": 78, "test": 156, "extra": 0}, r"key 'splits' of a medmnist dataset must be \['train', 'val', 'test'\]"),
        ("class_counts.train", [1, 2], r"key 'class_counts.train' sums to 3 but 'splits.train' is 546"),
        ("class_counts.train", [1], r"key 'class_counts.train' must list 2 non-negative integers"),
        ("class_counts.all", [1, 2], r"key 'class_counts.all' is not a split in 'splits'"),
        ("download.url_pattern", "https://x/y", r"key 'download.url_pattern' lacks the '\{filename\}' placeholder"),
        ("files.28", _DELETE, r"key 'files.28' is missing"),
        ("files.32", {"path": "m/x.npz"}, r"key 'files.32' is not an image size in \[28, 64, 128, 224\]"),
        ("files.28.md5", "xyz", r"key 'files.28.md5' is not a 32-digit hex digest: 'xyz'"),
        ("files.28.sha256", "0" * 63, r"key 'files.28.sha256' is not a 64-digit hex digest"),
        ("files.28.size_bytes", 0, r"key 'files.28.size_bytes' must be positive, got 0"),
        ("files.28.path", "/abs/x.npz", r"key 'files.28.path' must be relative to the data root"),
        ("files.28.path", "../x.npz", r"key 'files.28.path' must be relative to the data root"),
        ("citation", "one", r"key 'citation' has type str, expected list"),
    ],
)
def test_invalid_manifest_names_file_and_key(manifest_folder: Path, key: str, value: object, message: str) -> None:
    _write(manifest_folder, _set(_valid_entry(), key, value))
    with pytest.raises(ManifestError, match=rf"breastmnist\.json: {message}"):
        dataset_info("breastmnist")


def test_folder_csv_manifest_validation(manifest_folder: Path) -> None:
    entry = json.loads((REPO_MANIFESTS / "covid_chestxray_rare.json").read_text())
    _write(manifest_folder, _set(entry, "columns.path", []), name="covid_chestxray_rare")
    with pytest.raises(ManifestError, match=r"key 'columns.path' must be a non-empty list"):
        dataset_info("covid_chestxray_rare")
    _write(manifest_folder, _set(entry, "folder", "../up"), name="covid_chestxray_rare")
    with pytest.raises(ManifestError, match=r"key 'folder' must be relative to the data root"):
        dataset_info("covid_chestxray_rare")
    _write(manifest_folder, _set(entry, "metadata_csv", _DELETE), name="covid_chestxray_rare")
    with pytest.raises(ManifestError, match=r"missing key 'metadata_csv'"):
        dataset_info("covid_chestxray_rare")


def test_unreadable_json_is_a_manifest_error(manifest_folder: Path) -> None:
    (manifest_folder / "broken.json").write_text("{not json")
    with pytest.raises(ManifestError, match=r"broken\.json: not a readable JSON manifest"):
        dataset_info("broken")
    (manifest_folder / "broken.json").write_text("[1, 2]")
    with pytest.raises(ManifestError, match=r"broken\.json: key '<top>' must be an object, got list"):
        dataset_info("broken")


def test_edited_manifest_is_read_again(manifest_folder: Path) -> None:
    entry = _valid_entry()
    _write(manifest_folder, entry)
    assert dataset_info("breastmnist").title == "BreastMNIST"
    entry["title"] = "Edited"
    path = manifest_folder / "breastmnist.json"
    _write(manifest_folder, entry)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert dataset_info("breastmnist").title == "Edited"
