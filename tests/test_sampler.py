"""Episode sampler: shapes, determinism, patient-disjointness and the too-few policies."""

from __future__ import annotations

import pytest
import torch

from medfew.data.episodes.episode import Episode
from medfew.data.episodes.pool import ImagePool
from medfew.data.episodes.sampler import EpisodeSampler
from medfew.errors import EpisodeError, NotEnoughImagesError


def make_pool(counts: list[int], name: str = "toy", groups_per_class: int | None = None, size: int = 8) -> ImagePool:
    labels = torch.cat([torch.full((n,), i, dtype=torch.int64) for i, n in enumerate(counts)])
    m = labels.numel()
    images = torch.arange(m, dtype=torch.float32).view(m, 1, 1, 1).expand(m, 1, size, size) / max(m, 1)
    groups = None
    if groups_per_class is not None:
        # groups are unique per class: patient id = label * 1000 + (position % groups_per_class)
        pos = torch.cat([torch.arange(n) for n in counts])
        groups = labels * 1000 + pos % groups_per_class
    return ImagePool(
        images=images.contiguous(), labels=labels, class_names=tuple(f"c{i}" for i in range(len(counts))),
        name=name, groups=groups,
    )


def image_ids(images: torch.Tensor, m: int) -> list[int]:
    return [round(float(v) * m) for v in images[:, 0, 0, 0]]


def test_episode_shapes_and_labels() -> None:
    pool = make_pool([30] * 6)
    episode = EpisodeSampler([pool], ways=5, shots=3, queries=4, seed=1).sample(0)
    assert isinstance(episode, Episode)
    assert episode.support_images.shape == (15, 1, 8, 8)
    assert episode.query_images.shape == (20, 1, 8, 8)
    assert torch.equal(episode.support_labels, torch.arange(5).repeat_interleave(3))
    assert torch.equal(episode.query_labels, torch.arange(5).repeat_interleave(4))
    assert len(set(episode.class_names)) == 5 and episode.source == "toy"
    assert episode.shots == 3 and episode.ways == 5


def test_support_and_query_are_disjoint_and_match_their_class() -> None:
    pool = make_pool([20] * 5)
    m = len(pool)
    for episode in EpisodeSampler([pool], ways=5, shots=5, queries=5, seed=0).episodes(20):
        s, q = image_ids(episode.support_images, m), image_ids(episode.query_images, m)
        assert not set(s) & set(q)
        for ids, labels in ((s, episode.support_labels), (q, episode.query_labels)):
            for i, label in zip(ids, labels.tolist()):
                assert pool.class_names[int(pool.labels[i])] == episode.class_names[label]


def test_same_seed_and_index_give_the_same_episode_in_any_order() -> None:
    pool = make_pool([20] * 6)
    a = EpisodeSampler([pool], ways=4, shots=2, queries=3, seed=7)
    b = EpisodeSampler([pool], ways=4, shots=2, queries=3, seed=7)
    later = a.sample(5)
    _ = [b.sample(i) for i in range(5)]
    again = b.sample(5)
    assert torch.equal(later.support_images, again.support_images)
    assert later.class_names == again.class_names
    other_seed = EpisodeSampler([pool], ways=4, shots=2, queries=3, seed=8).sample(5)
    assert not torch.equal(later.query_images, other_seed.query_images)


def test_groups_never_cross_support_and_query() -> None:
    pool = make_pool([12, 12, 12], groups_per_class=4)  # 4 patients of 3 images per class
    m = len(pool)
    sampler = EpisodeSampler([pool], ways=3, shots=2, queries=6, seed=3)
    for episode in sampler.episodes(50):
        s = {int(pool.groups[i]) for i in image_ids(episode.support_images, m)}
        q = {int(pool.groups[i]) for i in image_ids(episode.query_images, m)}
        assert not s & q


def test_too_few_images_names_the_class_and_count() -> None:
    pool = make_pool([20, 20, 3])
    with pytest.raises(NotEnoughImagesError, match=r"class 'c2' of 'toy' has 3 images.*asked 2 shots \+ 5 queries = 7"):
        EpisodeSampler([pool], ways=3, shots=2, queries=5)


def test_too_few_groups_counts_patients() -> None:
    pool = make_pool([20, 20, 10], groups_per_class=None)
    pool = ImagePool(pool.images, pool.labels, pool.class_names, "p", groups=torch.where(pool.labels == 2, 99, torch.arange(len(pool))))
    with pytest.raises(NotEnoughImagesError, match=r"class 'c2' of 'p' has 10 images in 1 patients"):
        EpisodeSampler([pool], ways=3, shots=1, queries=1)


def test_limit_queries_gives_small_classes_fewer_queries() -> None:
    pool = make_pool([20, 20, 4])
    episode = EpisodeSampler([pool], ways=3, shots=2, queries=5, too_few="limit_queries").sample(0)
    counts = torch.bincount(episode.query_labels, minlength=3).tolist()
    small = episode.class_names.index("c2")
    assert counts[small] == 2 and sorted(counts) == [2, 5, 5]


def test_skip_drops_small_classes_but_needs_enough_left() -> None:
    pool = make_pool([20, 20, 20, 2])
    sampler = EpisodeSampler([pool], ways=3, shots=2, queries=5, too_few="skip")
    assert all("c3" not in e.class_names for e in sampler.episodes(10))
    with pytest.raises(NotEnoughImagesError, match="has 3 usable classes but ways=4"):
        EpisodeSampler([pool], ways=4, shots=2, queries=5, too_few="skip")


def test_each_episode_comes_from_one_domain_unless_mixed() -> None:
    a, b = make_pool([10] * 3, name="a"), make_pool([10] * 3, name="b")
    sources = {e.source for e in EpisodeSampler([a, b], ways=3, shots=1, queries=1).episodes(30)}
    assert sources == {"a", "b"}
    mixed = EpisodeSampler([a, b], ways=5, shots=1, queries=1, mix_domains=True).sample(0)
    assert all("/" in name for name in mixed.class_names)
    assert len(set(mixed.class_names)) == 5


def test_small_domains_are_left_out_or_give_fewer_ways() -> None:
    big, small = make_pool([10] * 5, name="big"), make_pool([10] * 2, name="small")
    fixed = EpisodeSampler([big, small], ways=5, shots=1, queries=1)
    assert {e.source for e in fixed.episodes(20)} == {"big"}
    capped = EpisodeSampler([big, small], ways=5, shots=1, queries=1, allow_fewer_ways=True)
    ways = {e.source: e.ways for e in capped.episodes(20)}
    assert ways == {"big": 5, "small": 2}


def test_global_class_ids_index_the_vocabulary() -> None:
    a, b = make_pool([10] * 3, name="a"), make_pool([10] * 3, name="b")
    sampler = EpisodeSampler([a, b], ways=3, shots=1, queries=1, seed=2)
    for episode in sampler.episodes(5):
        names = [sampler.class_vocabulary[i] for i in episode.global_class_ids.tolist()]
        assert names == [f"{episode.source}/{c}" for c in episode.class_names]


def test_normalize_and_augment_are_applied_in_order() -> None:
    pool = make_pool([10] * 3)
    calls: list[str] = []

    def augment(x: torch.Tensor) -> torch.Tensor:
        calls.append("augment")
        return x + 1.0

    def normalize(x: torch.Tensor) -> torch.Tensor:
        calls.append("normalize")
        return x * 0.0

    episode = EpisodeSampler([pool], ways=3, shots=1, queries=1, augment=augment, normalize=normalize).sample(0)
    assert calls == ["augment", "normalize"]
    assert float(episode.query_images.abs().sum()) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(ways=1, shots=1, queries=1), "ways >= 2"),
        (dict(ways=2, shots=0, queries=1), "shots >= 1"),
        (dict(ways=2, shots=1, queries=1, too_few="maybe"), "too_few must be"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(EpisodeError, match=match):
        EpisodeSampler([make_pool([5, 5])], **kwargs)


def test_pools_of_different_shapes_are_refused() -> None:
    with pytest.raises(EpisodeError, match="differ in image shape"):
        EpisodeSampler([make_pool([5, 5], size=8), make_pool([5, 5], name="x", size=4)], ways=2, shots=1, queries=1)
    with pytest.raises(EpisodeError, match="at least one pool"):
        EpisodeSampler([], ways=2, shots=1, queries=1)
    with pytest.raises(EpisodeError, match="index must be >= 0"):
        EpisodeSampler([make_pool([5, 5])], ways=2, shots=1, queries=1).sample(-1)


def _reference_draw(groups: list, rng, shots: int, queries: int):
    """The sampler's draw written plainly (a Python loop over groups): the vectorised one must match it
    draw for draw, so a seed keeps giving the episodes the published results were measured on."""
    import numpy as np

    orders = [rng.permutation(len(groups)) for _ in range(8)]
    orders.append(np.argsort([len(g) for g in groups], kind="stable"))
    best = None
    for order in orders:
        parts, n, cut = [], 0, 0
        for cut, g in enumerate(order, start=1):
            parts.append(groups[g])
            n += len(groups[g])
            if n >= shots:
                break
        rest = [groups[g] for g in order[cut:]]
        candidates = np.concatenate(rest) if rest else np.empty(0, dtype=np.int64)
        support = rng.permutation(np.concatenate(parts))[:shots]
        query = rng.permutation(candidates)[:queries]
        if best is None or query.size > best[1].size:
            best = (support, query)
        if query.size >= queries:
            break
    return best


def _reference_capacity(groups: list, shots: int) -> int:
    """Queries left after the least wasteful group-disjoint support draw, as the plain loop counted them."""
    sizes = sorted(len(g) for g in groups)
    taken, used = 0, 0
    for size in sizes:
        if taken >= shots:
            break
        taken += size
        used += 1
    return sum(sizes[used:]) if taken >= shots else 0


@pytest.mark.parametrize("grouping", ["none", "patients", "one_image_per_patient"])
@pytest.mark.parametrize(("shots", "queries"), [(1, 3), (3, 5), (2, 40)])
def test_vectorised_draw_matches_the_plain_loop(grouping: str, shots: int, queries: int) -> None:
    import numpy as np

    from medfew.data.episodes.sampler import _ClassIndex

    counts = [25, 9, 40, 0, 2]  # an empty class and one too small for most draws
    pool = make_pool(counts, groups_per_class={"none": None, "patients": 4, "one_image_per_patient": 100}[grouping])
    if grouping == "patients":  # some images without a patient id: each is its own group
        pool = ImagePool(images=pool.images, labels=pool.labels, class_names=pool.class_names, name="toy",
                         groups=torch.where(torch.arange(len(pool)) % 7 == 0, -1, pool.groups))
    for label, count in enumerate(counts):
        entry = _ClassIndex.build(0, pool, label, shots)
        members = np.flatnonzero(pool.labels.numpy() == label)
        if grouping != "none":
            ids = pool.groups.numpy()[members]
            groups = [members[ids == g] for g in sorted(set(ids[ids >= 0].tolist()))]
            groups += [members[i : i + 1] for i in np.flatnonzero(ids < 0)]
        else:
            groups = [members[i : i + 1] for i in range(members.size)]
        assert entry.n_groups == len(groups) and entry.n_images == count
        assert entry.query_capacity == _reference_capacity(groups, shots)
        if count < shots:
            continue  # the sampler never draws from such a class
        for seed in range(20):
            got = entry.draw(np.random.default_rng(seed), shots, queries)
            want = _reference_draw(groups, np.random.default_rng(seed), shots, queries)
            assert [a.tolist() for a in got] == [b.tolist() for b in want]
