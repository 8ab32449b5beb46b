"""Dataset kinds: a new kind is one module plus one registration line, and the catalogue, the pool
loader and the inspector use it without any other change."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_dicom

from medfew.data.sources import kinds
from medfew.data.sources.catalog import dataset_info
from medfew.data.sources.inspect import inspect_path
from medfew.data.sources.pools import load_pool
from medfew.errors import DatasetNotFoundError, ManifestError

# The whole of a new kind: class-per-folder DICOM studies under the data root.
DICOM_FOLDER_KIND = '''
from pathlib import Path
from typing import Any

from medfew.data.sources.kinds import DatasetKind
from medfew.data.sources.manifest import manifest_from_folder
from medfew.errors import DatasetNotFoundError, ManifestError


class DicomFolderKind(DatasetKind):
    name = "dicom_folder"

    def parse(self, top, splits) -> dict[str, Any]:
        folder = top.get("folder", str)
        if Path(folder).is_absolute() or ".." in Path(folder).parts:
            raise ManifestError(top.source, f"key 'folder' must be relative to the data root, got {folder!r}")
        return dict(folder=folder)

    def locate(self, info, root, *, image_size=28, strict=True):
        folder = root / info.folder
        if not folder.is_dir():
            raise DatasetNotFoundError(f"dataset {info.name!r}: {str(folder)!r} not found")
        return manifest_from_folder(folder, name=info.name)


KIND = DicomFolderKind()
'''


def entry(name: str, kind: str, **extra: object) -> dict[str, object]:
    return {"schema_version": 1, "name": name, "kind": kind, "title": name, "modality": "CT",
            "task": "binary-class", "n_channels": 1, "licence": "synthetic", "citation": ["none"],
            "class_names": ["cyst", "normal"], "splits": {"all": 4}, "class_counts": {"all": [2, 2]}, **extra}


@pytest.fixture
def catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "toyct.json").write_text(json.dumps(entry("toyct", "dicom_folder", folder="toyct")))
    monkeypatch.setenv("MEDFEW_MANIFEST_DIR", str(manifests))
    return manifests


def test_an_unregistered_kind_is_refused_by_name(catalogue: Path) -> None:
    with pytest.raises(ManifestError, match=r"toyct.json.*key 'kind' is 'dicom_folder', expected one of"):
        dataset_info("toyct")


def test_a_new_kind_is_one_module_and_one_registration_line(
    catalogue: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    request.addfinalizer(lambda: sys.modules.pop("dicom_folder_kind", None))  # forget the plugin, pass or fail
    package = tmp_path / "plugins"
    package.mkdir()
    (package / "dicom_folder_kind.py").write_text(DICOM_FOLDER_KIND)
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.setitem(kinds._MODULES, "dicom_folder", "dicom_folder_kind")  # the one registration line
    data_root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for label, bright_half in (("cyst", slice(0, 10)), ("normal", slice(10, 20))):
        for i in range(2):
            pixels = rng.integers(0, 200, (20, 20)).astype(np.uint16)
            pixels[:, bright_half] += 3000
            write_dicom(data_root / "toyct" / label / f"{i}.dcm", pixels)

    info = dataset_info("toyct")
    assert info.kind == "dicom_folder" and info.folder == "toyct"
    pool = load_pool("toyct", data_root=data_root, image_size=16, channels=1, cache=False)
    assert pool.class_names == ("cyst", "normal") and pool.labels.tolist() == [0, 0, 1, 1]
    assert tuple(pool.images.shape) == (4, 1, 16, 16)
    left, right = pool.images[..., :8].mean(dim=(1, 2, 3)), pool.images[..., 8:].mean(dim=(1, 2, 3))
    assert (left > right).tolist() == [True, True, False, False]  # each class keeps its own bright half
    report = inspect_path("toyct", data_root=data_root)
    assert report.kind == "catalog:dicom_folder" and report.n_images == 4 and not report.problems
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="toyct.*not found"):
        load_pool("toyct", data_root=tmp_path / "empty", image_size=16, cache=False)
