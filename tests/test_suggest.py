"""medfew.suggest: task descriptors, nearest-task retrieval, the leave-one-out check, records, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from medfew.cli import main
from medfew.data.episodes.episode import Episode
from medfew.data.preprocessing import Preprocessing
from medfew.evaluation import evaluate
from medfew.methods import build_method
from medfew.models import build_backbone
from medfew.suggest import (
    DESCRIPTOR_NAMES,
    MetaDataset,
    check_candidates,
    configuration_grid,
    load_for_checkpoint,
    nearest_tasks,
    rank_configurations,
    support_descriptor,
    wilson_interval,
    with_options,
)
from medfew.suggest.build import episode_descriptor
from medfew.suggest.loo import pick
from medfew.suggest.recorder import EvaluationRecorder
from medfew.training.checkpoint import (
    read_checkpoint_info,
    save_checkpoint,
)


def tiny_protonet(feature_transform: str = "none") -> nn.Module:
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8)
    return build_method("protonet", backbone, feature_transform=feature_transform).eval()


def random_episode(seed: int = 0, ways: int = 3, shots: int = 3, queries: int = 4) -> Episode:
    g = torch.Generator().manual_seed(seed)
    return Episode(
        support_images=torch.rand(ways * shots, 1, 16, 16, generator=g),
        support_labels=torch.arange(ways).repeat_interleave(shots),
        query_images=torch.rand(ways * queries, 1, 16, 16, generator=g),
        query_labels=torch.arange(ways).repeat_interleave(queries),
        class_names=tuple(f"c{i}" for i in range(ways)),
    )


# ---------------------------------------------------------------- descriptors
def test_descriptor_depends_on_the_support_set_only() -> None:
    method, episode = tiny_protonet(), random_episode()
    other_queries = dataclasses.replace(episode, query_labels=episode.query_labels.flip(0),
                                        query_images=torch.rand_like(episode.query_images))
    a = episode_descriptor(method, episode, None, None, lambda x: x)
    b = episode_descriptor(method, other_queries, None, None, lambda x: x)
    assert a == b and set(a) == set(DESCRIPTOR_NAMES)
    moved = dataclasses.replace(episode, support_images=episode.support_images * 0.5)
    assert episode_descriptor(method, moved, None, None, lambda x: x)["pixel_mean"] != a["pixel_mean"]


def test_descriptor_values_on_a_separable_support_set() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    features = torch.tensor([[1.0, 0.0], [1.1, 0.1], [0.9, -0.1], [-1.0, 0.0], [-1.1, 0.1], [-0.9, -0.1]])
    d = support_descriptor(None, labels, features)
    assert d["ways"] == 2 and d["shots"] == 3 and d["nc_loo_accuracy"] == 1.0
    assert d["fisher_ratio"] > 10 and math.isnan(d["pixel_mean"])
    one_shot = support_descriptor(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), features[[0, 3]])
    assert math.isnan(one_shot["within_class_spread"]) and math.isnan(one_shot["nc_loo_accuracy"])
    assert one_shot["channels"] == 3 and one_shot["centroid_separation"] > 0


# ---------------------------------------------------------------- retrieval
def toy_meta() -> MetaDataset:
    meta = MetaDataset(weights_sha256="0" * 64, configurations=[{}, {"head": "finetune"}])
    base = dict.fromkeys(DESCRIPTOR_NAMES, 1.0)
    meta.add_task({**base, "fisher_ratio": 0.5}, "a", {0: 0.9, 1: 0.2})
    meta.add_task({**base, "fisher_ratio": 5.0}, "b", {0: 0.3, 1: 0.8})
    meta.add_task({**base, "fisher_ratio": 9.0}, "c", {0: 0.5, 1: 0.5})
    return meta


def test_knn_picks_the_records_of_the_closest_descriptor() -> None:
    meta = toy_meta()
    query = {**dict.fromkeys(DESCRIPTOR_NAMES, 1.0), "fisher_ratio": 5.5}
    assert nearest_tasks(meta, query, k=1).tolist() == [1]
    assert nearest_tasks(meta, query, k=3).tolist() == [1, 2, 0]
    ranked = rank_configurations(meta, query, k=1)
    assert ranked[0].options == {"head": "finetune"} and ranked[0].neighbour_accuracy == pytest.approx(0.8)
    near_a = rank_configurations(meta, {**query, "fisher_ratio": 0.0}, k=1)
    assert near_a[0].options == {}


def test_knn_skips_entries_a_task_does_not_define() -> None:
    meta = toy_meta()
    query = {**dict.fromkeys(DESCRIPTOR_NAMES, math.nan), "fisher_ratio": 8.5}
    assert nearest_tasks(meta, query, k=1).tolist() == [2]


def test_meta_dataset_round_trip_and_errors(tmp_path: Path) -> None:
    meta = toy_meta()
    path = meta.save(tmp_path / "m.suggest.json")
    again = MetaDataset.load(path)
    assert again.configurations == meta.configurations and again.records == meta.records
    np.testing.assert_allclose(again.descriptors, meta.descriptors)
    with pytest.raises(Exception, match="medfew suggest build --checkpoint X"):
        MetaDataset.load(tmp_path / "missing.json", checkpoint="X")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(Exception, match="bad.json: not a readable meta-dataset"):
        MetaDataset.load(tmp_path / "bad.json")


# ---------------------------------------------------------------- leave-one-out check
def test_loo_check_ranks_the_clearly_better_candidate_first() -> None:
    """Classes differ only in feature norm: the l2 transform erases that, 'none' keeps it."""
    g = torch.Generator().manual_seed(0)
    direction = torch.tensor([1.0, 2.0, -1.0, 0.5])
    scale = torch.tensor([1.0] * 5 + [4.0] * 5).unsqueeze(1)
    features = scale * direction + 0.05 * torch.randn(10, 4, generator=g)
    images = features.reshape(10, 1, 2, 2)
    labels = torch.tensor([0] * 5 + [1] * 5)
    base = build_method("protonet", nn.Flatten(), feature_transform="none").eval()
    candidates = [({"feature_transform": "l2"}, 0.9), ({"feature_transform": "none"}, 0.8)]
    checks = check_candidates(lambda o: with_options(base, o), images, labels, candidates)
    assert checks[1].correct == 10 and checks[0].correct <= 7
    assert pick(checks).options == {"feature_transform": "none"}
    assert checks[1].ci_low < 1.0 == checks[1].ci_high


def test_wilson_interval_matches_the_formula() -> None:
    low, high = wilson_interval(8, 10)
    z, p, n = 1.959963984540054, 0.8, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (low, high) == pytest.approx((centre - half, centre + half))


def test_configuration_grid_keeps_the_checkpoint_settings_once() -> None:
    grid = configuration_grid("protonet", {"feature_transform": "cl2", "head": "prototype"})
    assert grid[0] == {} and {"head": "prototype", "feature_transform": "cl2"} not in grid
    assert any(c.get("head") == "finetune" for c in grid) and len(grid) == len({json.dumps(c, sort_keys=True) for c in grid})


# ---------------------------------------------------------------- evaluation records
def test_evaluation_hook_appends_one_record_per_episode(tmp_path: Path) -> None:
    method = tiny_protonet()
    meta = MetaDataset(weights_sha256="0" * 64, configurations=[{}])
    recorder = EvaluationRecorder(meta, method, {"head": "finetune"}, "toy/val", unit_images=True,
                                  path=tmp_path / "m.json")
    summary = evaluate(method, [random_episode(i) for i in range(3)], progress=False, conformal_alpha=None,
                       on_episode=recorder)
    assert meta.n_tasks == 3 and meta.configurations == [{}, {"head": "finetune"}]
    assert [round(s, 6) for _, c, s in meta.records if c == 1] == [round(e.accuracy, 6) for e in summary.episodes]
    assert MetaDataset.load(recorder.save()).n_tasks == 3


# ---------------------------------------------------------------- CLI, with the real default model
def write_support(folder: Path, data_root: Path, per_class: int = 3) -> Path:
    """Real RetinaMNIST test scans written as PNGs, one folder per class."""
    with np.load(data_root / "medmnist" / "retinamnist.npz", allow_pickle=False) as npz:
        images, labels = npz["test_images"], npz["test_labels"].ravel()
    for label in (0, 1, 2):
        (folder / f"grade{label}").mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            Image.fromarray(images[index]).save(folder / f"grade{label}" / f"scan{i}.png")
    return folder


@pytest.mark.slow  # loads the real default model twice
def test_cli_suggests_on_real_scans(tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture) -> None:
    folder = write_support(tmp_path / "support", data_root)
    assert main(["suggest", "--checkpoint", "default", "--support", str(folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    meta = load_for_checkpoint("default", read_checkpoint_info("default").weights_sha256)
    assert result["options"] in meta.configurations and result["checked"]
    chosen = result["pick"]
    assert chosen["loo_total"] == 9 and chosen["options"] == result["options"]
    assert chosen["ci95_wilson"][0] <= chosen["loo_accuracy"] <= chosen["ci95_wilson"][1]
    assert len(result["candidates"]) == 3 and result["descriptor"]["ways"] == 3
    assert main(["suggest", "--support", str(folder)]) == 0
    assert "leave-one-out accuracy on the 9 support scans" in capsys.readouterr().out


def test_cli_errors_are_named(tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture) -> None:
    folder = write_support(tmp_path / "support", data_root, per_class=2)
    (folder / "grade2" / "scan1.png").unlink()
    assert main(["suggest", "--support", str(folder)]) == 2
    assert "'grade2' has 1" in capsys.readouterr().err
    (folder / "grade2" / "scan1.png").write_bytes(b"not a png at all")
    assert main(["suggest", "--support", str(folder)]) == 2
    assert "scan1.png" in capsys.readouterr().err
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8)
    bare = save_checkpoint(tmp_path / "run" / "model", build_method("protonet", backbone), backbone="conv4",
                           backbone_config=backbone.config(), preprocessing=Preprocessing(16, 1, "zscore"))
    (folder / "grade2" / "scan1.png").unlink()
    write_support(tmp_path / "ok", data_root, per_class=2)
    assert main(["suggest", "--checkpoint", str(bare), "--support", str(tmp_path / "ok")]) == 2
    assert f"medfew suggest build --checkpoint {bare}" in capsys.readouterr().err
