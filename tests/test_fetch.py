"""Fetch: downloads from a local HTTP server, checksum checks, offline and refusal paths."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medfew.data.sources.fetch import fetch_datasets
from medfew.data.sources.pools import clear_memory_cache, load_pool
from medfew.errors import ConfigError, DatasetNotFoundError, MedfewError, RegistryError

REPO_MANIFESTS = Path(__file__).resolve().parents[1] / "data_manifests"
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens there


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        pass


@pytest.fixture
def served(tmp_path: Path) -> Path:
    folder = tmp_path / "served"
    folder.mkdir()
    return folder


@pytest.fixture
def server(served: Path) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 serving ``served``; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _toy_npz(path: Path) -> bytes:
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    np.savez(path, **arrays)
    return path.read_bytes()


@pytest.fixture
def toy(served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """A catalogue with one synthetic MedMNIST dataset ``toymnist`` whose files are served locally.

    Size 28: sha256 + md5 known; 64: md5 only; 128: no checksum; 224: a wrong md5.
    """
    data = {size: _toy_npz(served / name) for size, name in ((28, "toymnist.npz"), (64, "toymnist_64.npz"),
                                                            (128, "toymnist_128.npz"), (224, "toymnist_224.npz"))}
    entry = json.loads((REPO_MANIFESTS / "breastmnist.json").read_text())
    entry.update(name="toymnist", splits={"train": 6, "val": 3, "test": 3},
                 class_counts={"train": [3, 3], "val": [2, 1], "test": [2, 1]})
    entry["files"] = {
        "28": {"filename": "toymnist.npz", "path": "medmnist/toymnist.npz",
               "md5": hashlib.md5(data[28]).hexdigest(), "sha256": hashlib.sha256(data[28]).hexdigest(),
               "size_bytes": len(data[28])},
        "64": {"filename": "toymnist_64.npz", "path": "medmnist/toymnist_64.npz", "md5": hashlib.md5(data[64]).hexdigest()},
        "128": {"filename": "toymnist_128.npz", "path": "medmnist/toymnist_128.npz"},
        "224": {"filename": "toymnist_224.npz", "path": "medmnist/toymnist_224.npz", "md5": "0" * 32},
    }
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "toymnist.json").write_text(json.dumps(entry))
    (manifests / "covid_chestxray_rare.json").write_text((REPO_MANIFESTS / "covid_chestxray_rare.json").read_text())
    monkeypatch.setenv("MEDFEW_MANIFEST_DIR", str(manifests))
    return data


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_fetch_downloads_verifies_and_renames(server: str, toy: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDFEW_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "root"  # created by fetch
    paths = fetch_datasets("toymnist", data_root=root, base_url=server, progress=False)
    assert paths == [root.resolve() / "medmnist" / "toymnist.npz"]
    assert paths[0].read_bytes() == toy[28]
    assert _leftovers(root) == ["toymnist.npz"]  # no .part file left
    clear_memory_cache()
    pool = load_pool("toymnist", split="train", data_root=root, cache=False)
    assert len(pool) == 6 and pool.class_names == ("malignant", "normal, benign")


def test_present_file_with_right_checksum_is_not_downloaded_again(server: str, toy: dict, tmp_path: Path) -> None:
    fetch_datasets(["toymnist"], data_root=tmp_path, base_url=server, progress=False)
    # nothing listens on UNREACHABLE: succeeding proves no download was attempted
    assert fetch_datasets(["toymnist"], data_root=tmp_path, base_url=UNREACHABLE, progress=False) == [
        tmp_path.resolve() / "medmnist" / "toymnist.npz"
    ]


def test_real_file_already_in_the_data_root_is_skipped(data_root: Path, tmp_path: Path) -> None:
    (tmp_path / "medmnist").mkdir()
    (tmp_path / "medmnist" / "breastmnist.npz").symlink_to(data_root / "medmnist" / "breastmnist.npz")
    assert fetch_datasets("breastmnist", data_root=tmp_path, base_url=UNREACHABLE, progress=False) == [
        tmp_path.resolve() / "medmnist" / "breastmnist.npz"
    ]


def test_present_file_with_wrong_checksum_is_replaced(server: str, toy: dict, tmp_path: Path) -> None:
    dest = tmp_path / "medmnist" / "toymnist.npz"
    dest.parent.mkdir()
    dest.write_bytes(b"stale")
    with pytest.warns(RuntimeWarning, match=r"toymnist\.npz exists but its checksum is wrong: downloading it again"):
        fetch_datasets("toymnist", data_root=tmp_path, base_url=server, progress=False)
    assert dest.read_bytes() == toy[28]


def test_md5_only_size_is_verified(server: str, toy: dict, tmp_path: Path) -> None:
    (path,) = fetch_datasets("toymnist", size=64, data_root=tmp_path, base_url=server, progress=True)
    assert path.name == "toymnist_64.npz" and path.read_bytes() == toy[64]


def test_size_without_checksum_warns(server: str, toy: dict, tmp_path: Path) -> None:
    with pytest.warns(RuntimeWarning, match=r"no checksum is known for toymnist at 128x128 \(toymnist_128\.npz\): saved without verification"):
        (path,) = fetch_datasets("toymnist", size=128, data_root=tmp_path, base_url=server, progress=False)
    assert path.read_bytes() == toy[128]
    with pytest.warns(RuntimeWarning, match=r"already exists and no checksum is known .* kept unverified"):
        fetch_datasets("toymnist", size=128, data_root=tmp_path, base_url=UNREACHABLE, progress=False)


def test_checksum_mismatch_keeps_nothing(server: str, toy: dict, tmp_path: Path) -> None:
    with pytest.raises(MedfewError, match=r"checksum mismatch for toymnist_224\.npz from http://127\.0\.0\.1:\d+/toymnist_224\.npz: md5 expected 0{32}, got [0-9a-f]{32}; nothing was kept"):
        fetch_datasets("toymnist", size=224, data_root=tmp_path, base_url=server, progress=False)
    assert _leftovers(tmp_path / "medmnist") == []


def test_real_catalogue_checksum_mismatch(server: str, served: Path, tmp_path: Path) -> None:
    (served / "breastmnist.npz").write_bytes(b"this is not the official file")
    with pytest.raises(MedfewError, match=r"checksum mismatch for breastmnist\.npz.*sha256 expected 3a22d2a4"):
        fetch_datasets("breastmnist", data_root=tmp_path / "root", base_url=server, progress=False)
    assert _leftovers(tmp_path / "root") == []


def test_offline_error_says_where_to_put_the_file(tmp_path: Path) -> None:
    dest = tmp_path.resolve() / "medmnist" / "breastmnist_64.npz"
    url = UNREACHABLE + "breastmnist_64.npz"
    with pytest.raises(MedfewError, match=r"the machine seems to be offline") as info:
        fetch_datasets("breastmnist", size=64, data_root=tmp_path, base_url=UNREACHABLE, progress=False, timeout=5)
    message = str(info.value)
    assert re.search(rf"Download {re.escape(url)} by hand .* save it as {re.escape(str(dest))}", message)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_offline_message_gives_the_official_url_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDFEW_FETCH_BASE_URL", UNREACHABLE)
    with pytest.raises(MedfewError, match=re.escape(UNREACHABLE + "retinamnist.npz")):
        fetch_datasets("retinamnist", data_root=tmp_path, progress=False, timeout=5)


def test_http_error_is_reported_with_its_status(server: str, toy: dict, served: Path, tmp_path: Path) -> None:
    (served / "toymnist.npz").unlink()
    with pytest.raises(MedfewError, match=r"server answered HTTP 404 for http://127\.0\.0\.1:\d+/toymnist\.npz\. Download"):
        fetch_datasets("toymnist", data_root=tmp_path / "root", base_url=server, progress=False)
    assert _leftovers(tmp_path / "root") == []


def test_env_base_url_override(server: str, toy: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDFEW_FETCH_BASE_URL", server)
    (path,) = fetch_datasets("toymnist", data_root=tmp_path, progress=False)
    assert path.read_bytes() == toy[28]


@pytest.mark.parametrize("size", [32, 0, True, "28"])
def test_other_sizes_are_refused(size: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"size must be one of \[28, 64, 128, 224\]"):
        fetch_datasets("breastmnist", size=size, data_root=tmp_path)  # type: ignore[arg-type]


def test_unknown_or_unfetchable_names_are_refused_before_any_download(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"unknown dataset 'bloodmnst' \(did you mean 'bloodmnist'\?\)"):
        fetch_datasets(["breastmnist", "bloodmnst"], data_root=tmp_path, base_url=UNREACHABLE)
    with pytest.raises(DatasetNotFoundError, match=r"'covid_chestxray_rare' \(folder_csv\) cannot be downloaded by medfew.*covid_chestxray_ieee8023_rare"):
        fetch_datasets(["covid_chestxray_rare"], data_root=tmp_path)
    with pytest.raises(ConfigError, match="no dataset names"):
        fetch_datasets([], data_root=tmp_path)
    assert _leftovers(tmp_path) == []


def test_unwritable_destination_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "medmnist").write_text("a file where the medmnist folder should be")
    with pytest.raises(MedfewError, match=r"cannot write .*breastmnist\.npz\.part .*is the data root writable\?"):
        fetch_datasets("breastmnist", data_root=tmp_path, base_url=UNREACHABLE, progress=False)
