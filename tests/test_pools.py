"""Pools: catalogue, folder, CSV and .npz sources, error policy, memory and disk caches."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import write_png

from medfew.data.episodes.pool import ImagePool
from medfew.data.sources.catalog import dataset_info
from medfew.data.sources.pools import cache_dir, cache_stats, clear_memory_cache, load_pool, load_pools
from medfew.errors import ConfigError, DatasetNotFoundError, ImageReadError, ManifestError, MedfewError

MEDMNIST = ["bloodmnist", "breastmnist", "organamnist", "pneumoniamnist", "retinamnist"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own disk cache folder and an empty memory cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MEDFEW_CACHE_DIR", str(folder))
    clear_memory_cache()
    yield folder
    clear_memory_cache()


def toy_npz(path: Path, n_per_split: int = 6, rgb: bool = False) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        shape = (n_per_split, 28, 28, 3) if rgb else (n_per_split, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n_per_split) % 3).astype(np.uint8)[:, None]
    np.savez(path, **arrays)
    return path


# -------------------------------------------------------------------------------- catalogue data


@pytest.mark.parametrize("name", MEDMNIST)
def test_medmnist_train_pool_matches_the_official_counts(data_root: Path, name: str) -> None:
    info = dataset_info(name)
    pool = load_pool(name, split="train", data_root=data_root, cache=False)
    assert isinstance(pool, ImagePool)
    assert pool.name == name and pool.split == "train"
    assert pool.images.dtype == torch.uint8
    assert pool.images.shape == (info.splits["train"], 3, 28, 28)
    assert pool.class_names == info.class_names
    assert tuple(pool.class_counts().values()) == info.class_counts["train"]
    assert pool.groups is None
    files = pool.provenance["files"]
    assert files == [{"path": f"medmnist/{name}.npz", "sha256": info.files[28].sha256, "size_bytes": info.files[28].size_bytes}]


def test_bloodmnist_counts_from_the_readme(data_root: Path) -> None:
    pool = load_pool("bloodmnist", split="train", data_root=data_root, cache=False)
    assert len(pool) == 11959 and len(pool.class_names) == 8


@pytest.mark.parametrize("split", ["val", "test"])
def test_medmnist_other_splits_and_channel_policy(data_root: Path, split: str) -> None:
    info = dataset_info("breastmnist")
    pool = load_pool("breastmnist", split=split, data_root=data_root, image_size=32, channels=1, cache=False)
    assert pool.images.shape == (info.splits[split], 1, 32, 32)
    assert tuple(pool.class_counts().values()) == info.class_counts[split]
    assert pool.provenance["image_size"] == 32 and pool.provenance["native_size"] == 28


@pytest.mark.parametrize("split", [None, "all", "validation"])
def test_medmnist_needs_an_official_split(data_root: Path, split: str | None) -> None:
    with pytest.raises(ConfigError, match=rf"split={split!r}: MedMNIST dataset 'breastmnist' needs split= one of train, val, test"):
        load_pool("breastmnist", split=split, data_root=data_root)


@pytest.fixture(scope="module")
def covid_pool(data_root: Path) -> ImagePool:
    """The rare chest X-ray pool, decoded once for the module (91 large PNG/JPEG files)."""
    return load_pool("covid_chestxray_rare", data_root=data_root, cache=False)


@pytest.mark.slow
def test_covid_pool_has_91_images_in_11_classes_with_patient_groups(covid_pool: ImagePool) -> None:
    info = dataset_info("covid_chestxray_rare")
    pool = covid_pool
    assert pool.images.shape == (91, 3, 28, 28) and pool.images.dtype == torch.float32
    assert 0.0 <= float(pool.images.min()) and float(pool.images.max()) <= 1.0
    assert pool.split == "all" and pool.class_names == info.class_names
    assert tuple(pool.class_counts().values()) == info.class_counts["all"]
    assert pool.groups is not None and pool.groups.dtype == torch.int64
    assert int(pool.groups.min()) == 0 and pool.groups.unique().numel() == 62
    prov = pool.provenance
    assert prov["files"][0]["path"] == "covid_chestxray_ieee8023_rare/metadata_subset.csv"
    assert prov["files"][0]["sha256"] == info.metadata_csv.sha256
    assert prov["n_image_files"] == 91 and prov["skipped"] == []
    assert "patientid" not in json.dumps(prov)


def test_covid_pool_refuses_a_split_it_does_not_have(data_root: Path) -> None:
    with pytest.raises(ManifestError, match=r"unknown split 'train'; this manifest has: \['all'\]"):
        load_pool("covid_chestxray_rare", split="train", data_root=data_root)


def test_load_pools_with_a_split_per_dataset(data_root: Path) -> None:
    pools = load_pools(
        ["breastmnist", "retinamnist"], {"breastmnist": "test", "retinamnist": "val"}, data_root=data_root, cache=False
    )
    assert [(p.name, p.split, len(p)) for p in pools] == [("breastmnist", "test", 156), ("retinamnist", "val", 120)]
    same = load_pools(["breastmnist"], "val", data_root=data_root, cache=False)
    assert len(same[0]) == 78


def test_missing_medmnist_file_tells_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"medmnist/breastmnist\.npz' not found; run `medfew data fetch breastmnist`.*zenodo"):
        load_pool("breastmnist", split="train", data_root=tmp_path)


def test_catalogue_file_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    (tmp_path / "medmnist").mkdir()
    toy_npz(tmp_path / "medmnist" / "breastmnist.npz")
    with pytest.raises(MedfewError, match=r"breastmnist\.npz: checksum differs from the catalogue \(sha256 expected 3a22d2a4"):
        load_pool("breastmnist", split="train", data_root=tmp_path)


# ---------------------------------------------------------------------------------- npz source


def test_npz_path_source(tmp_path: Path) -> None:
    path = toy_npz(tmp_path / "toy.npz", rgb=True)
    pool = load_pool(path, split="val", image_size=16, channels=1, cache=False)
    assert pool.name == "toy" and pool.class_names == ("0", "1", "2")
    assert pool.images.shape == (6, 1, 16, 16) and pool.images.dtype == torch.uint8
    assert pool.labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_npz_path_named_like_a_catalogue_dataset_gets_its_class_names(data_root: Path) -> None:
    pool = load_pool(data_root / "medmnist" / "breastmnist.npz", split="val", cache=False)
    assert pool.name == "breastmnist" and pool.class_names == ("malignant", "normal, benign")


# ------------------------------------------------------------------------------ folder and CSV


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Good PNGs in ``a`` and ``b``, a garbage ``.png``, a truncated PNG, an empty class ``c``."""
    root = tmp_path / "mixed"
    write_png(root / "a" / "1.png", 10)
    write_png(root / "a" / "2.png", 20)
    write_png(root / "b" / "sub" / "3.png", 30, mode="RGB")
    (root / "a" / "broken.png").write_bytes(b"\x00garbage bytes, no image")
    good = (root / "a" / "1.png").read_bytes()
    write_png(root / "b" / "big.png", 40, size=256)
    (root / "b" / "truncated.png").write_bytes((root / "b" / "big.png").read_bytes()[:60])
    (root / "b" / "big.png").unlink()
    (root / "b" / ".DS_Store").write_bytes(good[:10])
    (root / "c").mkdir()
    return root


def test_folder_pool_raise_policy_raises_the_first_read_error(mixed_folder: Path) -> None:
    with pytest.raises(ImageReadError, match=r"broken\.png"):
        load_pool(mixed_folder)


def test_folder_pool_skip_policy_warns_for_each_file_and_records_it(mixed_folder: Path) -> None:
    with pytest.warns(RuntimeWarning) as record:
        pool = load_pool(mixed_folder, on_error="skip", image_size=16, channels=1)
    messages = [str(w.message) for w in record]
    assert any("skipping unreadable image" in m and "broken.png" in m for m in messages)
    assert any("skipping unreadable image" in m and "truncated.png" in m for m in messages)
    assert any("classes with no usable image: ['c']" in m for m in messages)
    assert pool.class_names == ("a", "b", "c")
    assert pool.class_counts() == {"a": 2, "b": 1, "c": 0}
    assert pool.images.shape == (3, 1, 16, 16) and pool.images.dtype == torch.float32
    assert pool.groups is None
    skipped = {entry["path"] for entry in pool.provenance["skipped"]}
    assert skipped == {"a/broken.png", "b/truncated.png"}
    assert pool.provenance["n_image_files"] == 3
    # means follow the PNG values 10, 20 and 30 (decoding really happened, in row order)
    means = pool.images.mean(dim=(1, 2, 3)) * 255
    assert torch.allclose(means, torch.tensor([10.0, 20.0, 30.0]), atol=1.5)


def test_folder_pool_writes_nothing_into_the_source(mixed_folder: Path, _isolated_cache: Path) -> None:
    before = sorted(p.relative_to(mixed_folder) for p in mixed_folder.rglob("*"))
    with pytest.warns(RuntimeWarning):
        load_pool(mixed_folder, on_error="skip")
    assert sorted(p.relative_to(mixed_folder) for p in mixed_folder.rglob("*")) == before
    assert len(list((_isolated_cache / "pools").glob("*.safetensors"))) == 1


def test_csv_pool_maps_groups_to_ids_and_filters_splits(tmp_path: Path) -> None:
    for i in range(5):
        write_png(tmp_path / f"{i}.png", 40 * i)
    (tmp_path / "m.csv").write_text(
        "path,label,group,split\n0.png,x,pz,train\n1.png,y,pa,train\n2.png,x,pz,train\n3.png,y,,train\n4.png,y,pq,test\n"
    )
    pool = load_pool(tmp_path / "m.csv", split="train", image_size=8)
    assert pool.name == "m" and pool.split == "train" and len(pool) == 4
    assert pool.labels.tolist() == [0, 1, 0, 1]
    assert pool.groups.tolist() == [1, 0, 1, -1]  # sorted group names: pa -> 0, pz -> 1; none -> -1
    with pytest.warns(RuntimeWarning, match=r"m: classes with no usable image: \['x'\]"):
        test = load_pool(tmp_path / "m.csv", split="test", image_size=8)  # labels keep the full vocabulary
    assert test.class_names == ("x", "y") and test.labels.tolist() == [1]
    assert len(test) == 1 and test.groups.tolist() == [0]
    everything = load_pool(tmp_path / "m.csv", image_size=8, progress=True)
    assert len(everything) == 5 and everything.split == "all"


def test_unknown_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"'nope' is neither a catalogue dataset \(bloodmnist, .*\) nor an existing folder"):
        load_pool("nope")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DatasetNotFoundError, match=r"x\.txt' is neither"):
        load_pool(tmp_path / "x.txt")


def test_folder_with_no_usable_image_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "bad.png").write_bytes(b"bad")
    with pytest.warns(RuntimeWarning, match="bad.png"), pytest.raises(ManifestError, match=r"no usable image \(1 unreadable"):
        load_pool(tmp_path, on_error="skip")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 0}, r"image_size must be a positive integer, got 0"),
        ({"image_size": 28.0}, r"image_size must be a positive integer, got 28\.0"),
        ({"channels": 2}, r"channels must be 1 or 3, got 2"),
        ({"on_error": "ignore"}, r"on_error must be 'raise' or 'skip', got 'ignore'"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_pool("breastmnist", split="train", **kwargs)


# ---------------------------------------------------------------------------------------- cache


def _small_folder(root: Path) -> Path:
    write_png(root / "a" / "1.png", 50)
    write_png(root / "b" / "2.png", 200)
    return root


def test_memory_cache_returns_the_same_pool(tmp_path: Path) -> None:
    folder = _small_folder(tmp_path / "d")
    first = load_pool(folder, image_size=8)
    stats = cache_stats()
    assert load_pool(folder, image_size=8) is first
    assert cache_stats()["memory_hits"] == stats["memory_hits"] + 1
    assert load_pool(folder, image_size=16) is not first  # another key


def test_disk_cache_hit_returns_equal_tensors(tmp_path: Path, _isolated_cache: Path) -> None:
    folder = _small_folder(tmp_path / "d")
    first = load_pool(folder, image_size=8)
    assert cache_dir() == _isolated_cache
    entries = list((_isolated_cache / "pools").iterdir())
    assert sorted(p.suffix for p in entries) == [".json", ".safetensors"]  # no temporary file left
    clear_memory_cache()
    stats = cache_stats()
    again = load_pool(folder, image_size=8)
    assert cache_stats()["disk_hits"] == stats["disk_hits"] + 1
    assert cache_stats()["builds"] == stats["builds"]
    assert again is not first
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert again.class_names == first.class_names and again.provenance == first.provenance


def test_disk_cache_keeps_medmnist_uint8(data_root: Path) -> None:
    first = load_pool("breastmnist", split="val", data_root=data_root)
    clear_memory_cache()
    again = load_pool("breastmnist", split="val", data_root=data_root)
    assert again.images.dtype == torch.uint8 and torch.equal(again.images, first.images)
    assert cache_stats()["disk_hits"] >= 1


@pytest.mark.parametrize("target", [".safetensors", ".json"])
def test_corrupt_cache_entry_is_ignored_and_rebuilt(tmp_path: Path, _isolated_cache: Path, target: str) -> None:
    folder = _small_folder(tmp_path / "d")
    first = load_pool(folder, image_size=8)
    clear_memory_cache()
    (entry,) = (_isolated_cache / "pools").glob(f"*{target}")
    entry.write_bytes(entry.read_bytes()[: len(entry.read_bytes()) // 2])
    builds = cache_stats()["builds"]
    with pytest.warns(RuntimeWarning, match="ignoring corrupt pool cache entry"):
        rebuilt = load_pool(folder, image_size=8)
    assert cache_stats()["builds"] == builds + 1
    assert torch.equal(rebuilt.images, first.images)
    clear_memory_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten entry is valid again
        assert torch.equal(load_pool(folder, image_size=8).images, first.images)


def test_changed_source_file_invalidates_the_cache(tmp_path: Path) -> None:
    folder = _small_folder(tmp_path / "d")
    first = load_pool(folder, image_size=8)
    target = folder / "a" / "1.png"
    write_png(target, 250)
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    clear_memory_cache()
    builds = cache_stats()["builds"]
    second = load_pool(folder, image_size=8)
    assert cache_stats()["builds"] == builds + 1
    assert not torch.equal(second.images, first.images)


def test_unwritable_cache_folder_only_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("MEDFEW_CACHE_DIR", str(blocker))
    folder = _small_folder(tmp_path / "d")
    with pytest.warns(RuntimeWarning, match="could not write the pool cache"):
        pool = load_pool(folder, image_size=8)
    assert len(pool) == 2


def test_cache_false_builds_every_time(tmp_path: Path, _isolated_cache: Path) -> None:
    folder = _small_folder(tmp_path / "d")
    builds = cache_stats()["builds"]
    load_pool(folder, image_size=8, cache=False)
    load_pool(folder, image_size=8, cache=False)
    assert cache_stats()["builds"] == builds + 2
    assert not (_isolated_cache / "pools").exists()


def test_capped_keeps_a_seeded_subset_per_class_in_pool_order() -> None:
    from medfew.data.episodes.pool import ImagePool
    from medfew.errors import MedfewError

    labels = torch.tensor([0] * 10 + [1] * 3)
    pool = ImagePool(images=torch.arange(13, dtype=torch.uint8).view(13, 1, 1, 1), labels=labels,
                     class_names=("a", "b"), name="p", groups=torch.arange(13))
    capped = pool.capped(4, seed=1)
    assert capped.class_counts() == {"a": 4, "b": 3}
    kept = capped.images.flatten().tolist()
    assert kept == sorted(kept) and capped.groups.tolist() == kept  # images, labels and groups stay aligned
    assert pool.capped(4, seed=1).images.flatten().tolist() == kept  # deterministic
    assert pool.capped(0) is pool and pool.capped(10) is pool
    assert capped.provenance["max_per_class"] == 4
    with pytest.raises(MedfewError, match=r"max_per_class must be an integer >= 0, got -1"):
        pool.capped(-1)
