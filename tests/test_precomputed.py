"""Features computed once per image give exactly the logits of the images themselves."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from medfew.data.episodes.pool import ImagePool
from medfew.data.episodes.sampler import EpisodeSampler
from medfew.data.preprocessing import normalize_batch
from medfew.data.sources.encoded_pool import encoded_pool
from medfew.errors import ConfigError
from medfew.evaluation import evaluate
from medfew.experiment import precompute_features
from medfew.methods import build_method
from medfew.models import build_backbone
from medfew.models.precomputed import PrecomputedFeatures


def pool(seed: int = 0) -> ImagePool:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(12)
    images = (torch.rand(len(labels), 3, 28, 28, generator=g) * 200 + 20 * labels.view(-1, 1, 1, 1)).to(torch.uint8)
    return ImagePool(images=images, labels=labels, class_names=("a", "b", "c"), name="synthetic", split="test")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDFEW_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("hp", [{"head": "prototype", "feature_transform": "cl2"},
                                {"head": "finetune", "finetune_steps": 10, "feature_transform": "cl2"},
                                {"head": "finetune", "finetune_steps": 10, "finetune_flip": False}])
def test_evaluation_on_precomputed_features_equals_evaluation_on_images(hp: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    method = build_method("protonet", build_backbone("conv4", in_channels=3, image_size=28, hidden=8), **hp).eval()
    normalize = partial(normalize_batch, mode="zscore")
    images = EpisodeSampler([pool()], ways=3, shots=4, queries=5, seed=3, normalize=normalize)
    expected = evaluate(method, images.episodes(6), n_episodes=6, progress=False)
    assert method.reads_fixed_features
    [features] = precompute_features(method, [pool()], normalize, signature=str(hp), progress=False)
    assert isinstance(method.backbone, PrecomputedFeatures) and features.image_shape == (8, 1, 2)
    stored = EpisodeSampler([features], ways=3, shots=4, queries=5, seed=3, normalize=None)
    got = evaluate(method, stored.episodes(6), n_episodes=6, progress=False)
    assert [e.accuracy for e in got.episodes] == [e.accuracy for e in expected.episodes]
    assert got.nll == pytest.approx(expected.nll, rel=1e-5)


def test_top_block_finetuning_does_not_read_fixed_features() -> None:
    method = build_method("protonet", build_backbone("conv4", in_channels=3, image_size=28, hidden=8),
                          head="finetune", finetune_depth=1)
    assert not method.reads_fixed_features


def test_encoded_pool_is_cached_and_keyed_by_signature() -> None:
    calls = []

    def encode(batch: torch.Tensor) -> torch.Tensor:
        calls.append(len(batch))
        return batch.mean(dim=(2, 3), keepdim=True)

    first = encoded_pool(pool(), encode=encode, signature="s1")
    again = encoded_pool(pool(), encode=encode, signature="s1")
    assert again is first and sum(calls) == len(pool())
    encoded_pool(pool(), encode=encode, signature="s2")
    assert sum(calls) == 2 * len(pool())
    assert first.images.shape == (36, 3, 1, 1) and first.provenance["encoded_by"] == "s1"


def test_precomputed_features_refuse_images() -> None:
    with pytest.raises(ConfigError, match=r"precomputed features must be \(B, 8, 1, 2\), got \(2, 3, 28, 28\)"):
        PrecomputedFeatures(8)(torch.zeros(2, 3, 28, 28))
