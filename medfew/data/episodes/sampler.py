"""N-way K-shot Q-query episode sampling from one or more ``ImagePool`` domains.

Every episode is a pure function of ``(seed, index)``: the same index always gives the same episode,
whatever was sampled before. That makes evaluation reproducible across methods, resume exact, and
distributed training trivial (each rank takes its own indices).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from medfew.data.episodes.episode import Episode
from medfew.data.episodes.pool import ImagePool
from medfew.errors import EpisodeError, NotEnoughImagesError

logger = logging.getLogger(__name__)

TooFewPolicy = Literal["error", "skip", "limit_queries"]
Augment = Callable[[torch.Tensor], torch.Tensor]
Normalize = Callable[[torch.Tensor], torch.Tensor]

_RETRIES = 8


@dataclass(frozen=True)
class _ClassIndex:
    """The images of one class of one pool, grouped by patient (or one group per image).

    ``images`` holds the class's pool indices group after group and ``starts`` where each group
    begins, so a draw gathers groups with array indexing instead of a Python loop over the class.
    """

    pool: int
    label: int
    name: str
    images: np.ndarray  # (n_images,) pool indices, grouped
    starts: np.ndarray  # (n_groups + 1,) group g is images[starts[g]:starts[g + 1]]
    n_images: int
    query_capacity: int  # queries available after the least wasteful group-disjoint support draw

    @property
    def n_groups(self) -> int:
        """Number of groups (patients, or images when the pool has no groups)."""
        return len(self.starts) - 1

    @staticmethod
    def build(pool_index: int, pool: ImagePool, label: int, shots: int) -> _ClassIndex:
        members = np.flatnonzero(pool.labels.numpy() == label)
        if pool.groups is None:
            groups = [members]
            sizes = np.ones(members.size, dtype=np.int64)
        else:
            ids = pool.groups.numpy()[members]
            known = sorted(set(ids[ids >= 0].tolist()))
            groups = [members[ids == g] for g in known] + [members[ids < 0]]
            sizes = np.array([len(g) for g in groups[:-1]] + [1] * len(groups[-1]), dtype=np.int64)
        images = np.concatenate(groups) if members.size else np.empty(0, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        ordered = np.sort(sizes)
        taken = np.cumsum(ordered)
        used = int(np.searchsorted(taken, shots)) + 1  # fewest groups giving `shots` images
        capacity = int(ordered[used:].sum()) if used <= len(ordered) else 0
        return _ClassIndex(pool_index, label, pool.class_names[label], images, starts, int(members.size), capacity)

    def _gather(self, groups: np.ndarray) -> np.ndarray:
        """The images of ``groups`` (group indices), group after group, in that order."""
        if self.n_groups == self.n_images:  # one image per group
            return self.images[groups]
        if not len(groups):
            return np.empty(0, dtype=self.images.dtype)
        return np.concatenate([self.images[self.starts[g] : self.starts[g + 1]] for g in groups])

    def draw(self, rng: np.random.Generator, shots: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``shots`` support and up to ``queries`` query indices from disjoint groups.

        Up to ``_RETRIES`` random group orders are tried (then the smallest groups first, which is
        always feasible): the first groups of an order give the support, the rest the queries.
        """
        sizes = np.diff(self.starts)
        orders = [rng.permutation(self.n_groups) for _ in range(_RETRIES)]
        orders.append(np.argsort(sizes, kind="stable"))
        best: tuple[np.ndarray, np.ndarray] | None = None
        for order in orders:
            cut = min(int(np.searchsorted(np.cumsum(sizes[order]), shots)) + 1, len(order))
            support = rng.permutation(self._gather(order[:cut]))[:shots]
            query = rng.permutation(self._gather(order[cut:]))[:queries]
            if best is None or query.size > best[1].size:
                best = (support, query)
            if query.size >= queries:
                break
        assert best is not None
        return best


@dataclass(frozen=True)
class EpisodePlan:
    """The images one episode is made of, as pool indices, class by class in label order.

    Attributes:
        class_names: ``(N,)`` names of the episode's classes.
        class_ids: ``(N,)`` indices into the sampler's ``class_vocabulary``.
        sources: ``(N,)`` pool name of each class.
        support: ``(N,)`` pairs ``(pool index, image indices)`` of each class's support images.
        query: ``(N,)`` pairs ``(pool index, image indices)`` of each class's query images.
        augment_seed: Seed of this episode's augmentation.
    """

    class_names: tuple[str, ...]
    class_ids: tuple[int, ...]
    sources: tuple[str, ...]
    support: tuple[tuple[int, np.ndarray], ...]
    query: tuple[tuple[int, np.ndarray], ...]
    augment_seed: int


class EpisodeSampler:
    """Draws N-way K-shot Q-query episodes, deterministically for a given seed.

    By default each episode comes from one pool (domain). When pools carry groups (patient ids),
    support and query never share a group. Classes that cannot provide ``shots + queries``
    group-disjoint images are handled by ``too_few``: ``"error"`` names them, ``"skip"`` drops them
    (with a warning), ``"limit_queries"`` keeps every class that has at least ``shots + 1`` and gives it
    fewer queries.

    Args:
        pools: One or more pools with images of the same ``(C, H, W)``.
        ways: Classes per episode ``N``.
        shots: Support images per class ``K``.
        queries: Query images per class ``Q``.
        seed: Base seed; episode ``i`` depends only on ``(seed, i)``.
        too_few: Policy for classes with too few images (see above).
        allow_fewer_ways: Let a pool with fewer than ``ways`` usable classes (but at least 2) give
            episodes over all its classes instead of being left out.
        mix_domains: Draw the classes of an episode from all pools together instead of from one.
        normalize: Applied to every episode batch ``(B, C, H, W)`` after augmentation (e.g. z-score).
        augment: Training-time augmentation of ``(B, C, H, W)`` float batches in ``[0, 1]``; ``None``
            at evaluation. If it has ``set_random_state(seed)`` it is reseeded per episode.
        device: Hold the pools' images on this device (copied once) and gather, augment and
            normalise episode images there; labels stay on the CPU, where the episode is validated
            without a device sync. ``None`` keeps everything on the CPU.
        pin_memory: Return episodes whose CPU tensors are in page-locked memory, so that
            ``episode.to("cuda", non_blocking=True)`` overlaps the copy with compute (needs CUDA).

    Raises:
        NotEnoughImagesError: A class is too small (policy ``"error"``) or no pool can give ``ways``
            classes.
        EpisodeError: Pools disagree on image shape, or bad ``ways``/``shots``/``queries``.
    """

    def __init__(
        self,
        pools: Sequence[ImagePool],
        *,
        ways: int,
        shots: int,
        queries: int,
        seed: int = 0,
        too_few: TooFewPolicy = "error",
        allow_fewer_ways: bool = False,
        mix_domains: bool = False,
        normalize: Normalize | None = None,
        augment: Augment | None = None,
        device: torch.device | str | None = None,
        pin_memory: bool = False,
    ) -> None:
        if not pools:
            raise EpisodeError("EpisodeSampler needs at least one pool")
        if ways < 2 or shots < 1 or queries < 1:
            raise EpisodeError(f"need ways >= 2, shots >= 1, queries >= 1; got ways={ways}, shots={shots}, queries={queries}")
        if too_few not in ("error", "skip", "limit_queries"):
            raise EpisodeError(f"too_few must be 'error', 'skip' or 'limit_queries', got {too_few!r}")
        shapes = {p.image_shape for p in pools}
        if len(shapes) > 1:
            raise EpisodeError(f"pools differ in image shape: { {p.name: p.image_shape for p in pools} }")
        if pin_memory and not torch.cuda.is_available():
            raise EpisodeError("pin_memory=True needs CUDA (page-locked memory only helps host-to-GPU copies)")
        self.device = None if device is None else torch.device(device)
        self.pin_memory = pin_memory
        if self.device is not None:
            pools = [dataclasses.replace(p, images=p.images.to(self.device)) for p in pools]
        self.pools = tuple(pools)
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, seed
        self.mix_domains = mix_domains
        self.normalize = normalize
        self.augment = augment
        self.class_vocabulary: tuple[str, ...] = tuple(f"{p.name}/{c}" for p in pools for c in p.class_names)
        self._vocab_index = {name: i for i, name in enumerate(self.class_vocabulary)}
        self._domains = self._index_classes(too_few, allow_fewer_ways)

    # ------------------------------------------------------------------ construction
    def _index_classes(self, too_few: TooFewPolicy, allow_fewer_ways: bool) -> list[list[_ClassIndex]]:
        need = self.shots + self.queries
        minimum = need if too_few != "limit_queries" else self.shots + 1
        per_pool: list[list[_ClassIndex]] = []
        left_out: list[str] = []
        for i, pool in enumerate(self.pools):
            kept, small = [], []
            for label in range(len(pool.class_names)):
                entry = _ClassIndex.build(i, pool, label, self.shots)
                if self.shots + entry.query_capacity >= minimum:
                    kept.append(entry)
                else:
                    small.append(entry)
            if small:
                detail = "; ".join(self._shortfall(pool, e) for e in small)
                asked = f"{self.shots} shots + {self.queries} queries = {need} per class"
                if too_few == "error":
                    hint = "use too_few='limit_queries' (CLI: --allow-fewer-queries) or 'skip'"
                    raise NotEnoughImagesError(f"{detail}; asked {asked}; {hint}")
                logger.warning("leaving out classes with too few images (%s): %s", asked, detail)
                left_out.append(detail)
            per_pool.append(kept)
        if self.mix_domains:
            domains = [[e for kept in per_pool for e in kept]]
        else:
            domains = per_pool
        usable = []
        for d, entries in enumerate(domains):
            name = "mixed" if self.mix_domains else self.pools[d].name
            if len(entries) >= self.ways or (allow_fewer_ways and len(entries) >= 2):
                usable.append(entries)
            elif len(domains) > 1:
                logger.warning("pool %r has %d usable classes < ways=%d: left out", name, len(entries), self.ways)
            else:
                why = f"; left out: {'; '.join(left_out)}" if left_out else ""
                raise NotEnoughImagesError(
                    f"pool {name!r} has {len(entries)} usable classes but ways={self.ways} was asked{why}"
                )
        if not usable:
            raise NotEnoughImagesError(f"no pool can give {self.ways}-way episodes: {[p.name for p in self.pools]}")
        return usable

    def _shortfall(self, pool: ImagePool, entry: _ClassIndex) -> str:
        unit = "patients" if pool.groups is not None else "images"
        if entry.query_capacity == 0 and entry.n_groups and entry.n_images >= self.shots:
            room = f"no query left after {self.shots} group-disjoint shots"
        elif entry.query_capacity == 0:
            room = f"fewer than {self.shots} shots"
        else:
            room = f"at most {entry.query_capacity} group-disjoint queries after {self.shots} shots"
        return f"class {entry.name!r} of {pool.name!r} has {entry.n_images} images in {entry.n_groups} {unit} ({room})"

    # ------------------------------------------------------------------ sampling
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the episode images."""
        return self.pools[0].image_shape

    def plan(self, index: int) -> EpisodePlan:
        """Which images episode ``index`` uses, without gathering them (deterministic for ``(seed, index)``)."""
        if index < 0:
            raise EpisodeError(f"episode index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, index])
        entries = self._domains[int(rng.integers(len(self._domains)))]
        ways = min(self.ways, len(entries))
        chosen = [entries[i] for i in rng.choice(len(entries), size=ways, replace=False)]
        support, query = [], []
        for entry in chosen:
            s, q = entry.draw(rng, self.shots, self.queries)
            support.append((entry.pool, s))
            query.append((entry.pool, q))
        return EpisodePlan(
            class_names=tuple(self._class_name(e) for e in chosen),
            class_ids=tuple(self._vocab_index[f"{self.pools[e.pool].name}/{e.name}"] for e in chosen),
            sources=tuple(self.pools[e.pool].name for e in chosen),
            support=tuple(support),
            query=tuple(query),
            augment_seed=int(rng.integers(2**31)),
        )

    def sample(self, index: int) -> Episode:
        """Build episode number ``index`` (deterministic for ``(seed, index)``)."""
        plan = self.plan(index)
        parts = [self.pools[p].as_float(torch.from_numpy(idx)) for p, idx in plan.support + plan.query]
        images = torch.cat(parts)
        if self.augment is not None:
            if hasattr(self.augment, "set_random_state"):
                self.augment.set_random_state(plan.augment_seed)
            images = self.augment(images)
        if self.normalize is not None:
            images = self.normalize(images)
        support_labels = [label for label, (_, idx) in enumerate(plan.support) for _ in range(len(idx))]
        query_labels = [label for label, (_, idx) in enumerate(plan.query) for _ in range(len(idx))]
        n_support = len(support_labels)
        sources = set(plan.sources)
        pin = self._pin if self.pin_memory else _identity
        return Episode(
            support_images=pin(images[:n_support].contiguous()),
            support_labels=pin(torch.tensor(support_labels, dtype=torch.int64)),
            query_images=pin(images[n_support:].contiguous()),
            query_labels=pin(torch.tensor(query_labels, dtype=torch.int64)),
            class_names=plan.class_names,
            source=sources.pop() if len(sources) == 1 else "mixed",
            global_class_ids=pin(torch.tensor(plan.class_ids, dtype=torch.int64)),
        )

    @staticmethod
    def _pin(t: torch.Tensor) -> torch.Tensor:
        return t.pin_memory() if t.device.type == "cpu" else t

    def _class_name(self, entry: _ClassIndex) -> str:
        # Mixed episodes qualify names by domain: "normal" of two datasets are different classes.
        return f"{self.pools[entry.pool].name}/{entry.name}" if self.mix_domains else entry.name

    def episodes(self, n: int, start: int = 0) -> Iterator[Episode]:
        """Yield episodes ``start, ..., start + n - 1``."""
        for index in range(start, start + n):
            yield self.sample(index)


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t
