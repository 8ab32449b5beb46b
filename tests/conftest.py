"""Shared fixtures.

``data_root`` is the real public data (``MEDFEW_DATA_ROOT``, else ``../shared/data`` beside the
checkout). Tests that need it are skipped on a machine without it, except under CI (``CI=true``),
where a missing data root is an error: CI must prove the integration tests, not skip them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _find_data_root() -> Path | None:
    env = os.environ.get("MEDFEW_DATA_ROOT")
    candidates = [Path(env)] if env else [REPO_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if (candidate / "medmnist").is_dir():
            return candidate.resolve()
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root, with MedMNIST, the rare chest X-ray folder and DICOM samples."""
    root = _find_data_root()
    if root is None:
        message = "real data not found: set MEDFEW_DATA_ROOT to a folder holding medmnist/ (see README)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(autouse=True, scope="session")
def _private_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Case libraries and audit records go to a throwaway SQLite file, never the user's database.

    Tests that need their own database set ``MEDFEW_DB_URL`` themselves (monkeypatch), which wins.
    """
    before = os.environ.get("MEDFEW_DB_URL")
    os.environ["MEDFEW_DB_URL"] = f"sqlite:///{tmp_path_factory.mktemp('db') / 'medfew.db'}"
    yield
    if before is None:
        os.environ.pop("MEDFEW_DB_URL", None)
    else:
        os.environ["MEDFEW_DB_URL"] = before


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
