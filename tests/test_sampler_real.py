"""Episodes from the real rare chest X-ray folder never share a patient between support and query."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from medfew.data.episodes.sampler import EpisodeSampler
from medfew.data.preprocessing import normalize_batch
from medfew.data.sources.pools import load_pool
from medfew.errors import NotEnoughImagesError


@pytest.fixture(scope="module")
def rare_pool(data_root: Path):
    return load_pool("covid_chestxray_rare", data_root=data_root, image_size=28, channels=3)


def test_rare_pool_has_patient_groups(rare_pool) -> None:
    assert len(rare_pool) == 91 and len(rare_pool.class_names) == 11
    assert rare_pool.groups is not None
    assert len(set(rare_pool.groups.tolist())) < len(rare_pool)  # some patients have several images


@pytest.mark.parametrize("shots", [1, 2])
def test_support_and_query_never_share_a_patient(rare_pool, shots: int) -> None:
    sampler = EpisodeSampler([rare_pool], ways=5, shots=shots, queries=15, seed=0, too_few="limit_queries",
                             normalize=partial(normalize_batch, mode="zscore"))
    groups = rare_pool.groups.numpy()
    checked = 0
    for index in range(300):
        plan = sampler.plan(index)
        for (_, support), (_, query) in zip(plan.support, plan.query):
            assert len(support) == shots and len(query) >= 1
            assert not set(groups[support]) & set(groups[query]), f"episode {index} shares a patient"
            checked += 1
    assert checked == 300 * 5
    episode = sampler.sample(0)
    assert episode.support_images.shape == (5 * shots, 3, 28, 28)


def test_strict_sampling_names_the_small_classes(rare_pool) -> None:
    with pytest.raises(NotEnoughImagesError, match=r"class 'Lipoid' of 'covid_chestxray_rare' has 3 images"):
        EpisodeSampler([rare_pool], ways=5, shots=1, queries=15)
