"""Episode validation: every branch names what is wrong."""

from __future__ import annotations

import pytest
import torch

from medfew.data.episodes.episode import Episode
from medfew.errors import EpisodeError


def episode(**overrides) -> Episode:
    fields = dict(
        support_images=torch.zeros(4, 1, 8, 8),
        support_labels=torch.tensor([0, 0, 1, 1]),
        query_images=torch.zeros(2, 1, 8, 8),
        query_labels=torch.tensor([0, 1]),
        class_names=("a", "b"),
    )
    fields.update(overrides)
    return Episode(**fields)


def test_valid_episode_properties() -> None:
    e = episode()
    assert (e.ways, e.shots, e.image_shape) == (2, 2, (1, 8, 8))
    assert e.to("cpu").support_images.device.type == "cpu"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(class_names=("a",)), "at least 2 classes"),
        (dict(support_images=torch.zeros(4, 8, 8)), r"support_images must be \(B, C, H, W\)"),
        (dict(query_labels=torch.tensor([0])), r"query_labels must be \(2,\)"),
        (dict(support_labels=torch.tensor([0, 0, 1, 1], dtype=torch.int32)), "must be int64"),
        (dict(query_labels=torch.tensor([0, 2])), r"must lie in \[0, 2\)"),
        (dict(query_images=torch.zeros(2, 3, 8, 8)), "differ in shape"),
        (dict(support_labels=torch.tensor([0, 0, 0, 0])), r"no support image: \['b'\]"),
        (dict(global_class_ids=torch.tensor([1, 2, 3])), r"global_class_ids must be \(2,\)"),
    ],
)
def test_invalid_episodes_are_refused(overrides: dict, match: str) -> None:
    with pytest.raises(EpisodeError, match=match):
        episode(**overrides)
