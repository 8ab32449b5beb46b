"""The few-shot ``Episode``: a labelled support set and a query set drawn from ``N`` classes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfew.errors import EpisodeError


@dataclass(frozen=True)
class Episode:
    """One N-way few-shot task.

    Labels are episode-local: class ``i`` of this episode is ``class_names[i]``.

    Attributes:
        support_images: ``(N*K, C, H, W)`` float32 support images.
        support_labels: ``(N*K,)`` int64 labels in ``[0, N)``; every class has at least one image.
        query_images: ``(M, C, H, W)`` float32 query images (``M`` is ``N*Q`` when balanced).
        query_labels: ``(M,)`` int64 labels in ``[0, N)``.
        class_names: ``(N,)`` names of the classes, in label order.
        source: Name of the dataset (domain) the episode was drawn from, or ``"mixed"``.
        global_class_ids: ``(N,)`` int64 index of each class in the sampler's class vocabulary, or
            ``None`` (used by methods that also learn a classifier over all meta-train classes).
    """

    support_images: torch.Tensor
    support_labels: torch.Tensor
    query_images: torch.Tensor
    query_labels: torch.Tensor
    class_names: tuple[str, ...]
    source: str = ""
    global_class_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = len(self.class_names)
        if n < 2:
            raise EpisodeError(f"an episode needs at least 2 classes, got {n}: {list(self.class_names)}")
        for name in ("support", "query"):
            images: torch.Tensor = getattr(self, f"{name}_images")
            labels: torch.Tensor = getattr(self, f"{name}_labels")
            if images.ndim != 4:
                raise EpisodeError(f"{name}_images must be (B, C, H, W), got shape {tuple(images.shape)}")
            if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
                raise EpisodeError(
                    f"{name}_labels must be ({images.shape[0]},), got shape {tuple(labels.shape)}"
                )
            if labels.dtype != torch.int64:
                raise EpisodeError(f"{name}_labels must be int64, got {labels.dtype}")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n):
                raise EpisodeError(f"{name}_labels must lie in [0, {n}), got {labels.unique().tolist()}")
        if self.support_images.shape[1:] != self.query_images.shape[1:] and self.query_images.numel():
            raise EpisodeError(
                f"support and query images differ in shape: {tuple(self.support_images.shape[1:])} "
                f"vs {tuple(self.query_images.shape[1:])}"
            )
        counts = torch.bincount(self.support_labels, minlength=n)
        empty = [self.class_names[i] for i in range(n) if counts[i] == 0]
        if empty:
            raise EpisodeError(f"classes with no support image: {empty}")
        if self.global_class_ids is not None and self.global_class_ids.shape != (n,):
            raise EpisodeError(f"global_class_ids must be ({n},), got {tuple(self.global_class_ids.shape)}")

    @property
    def ways(self) -> int:
        """Number of classes ``N``."""
        return len(self.class_names)

    @property
    def shots(self) -> int:
        """Support images per class ``K`` (the smallest class count when unbalanced)."""
        return int(torch.bincount(self.support_labels, minlength=self.ways).min())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        c, h, w = self.support_images.shape[1:]
        return int(c), int(h), int(w)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Episode:
        """Return a copy with every tensor on ``device``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Episode(
            support_images=move(self.support_images),
            support_labels=move(self.support_labels),
            query_images=move(self.query_images),
            query_labels=move(self.query_labels),
            class_names=self.class_names,
            source=self.source,
            global_class_ids=move(self.global_class_ids),
        )
