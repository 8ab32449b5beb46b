"""``ImagePool``: decoded, preprocessed images of one dataset split, held in memory for sampling."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from medfew.errors import MedfewError


@dataclass(frozen=True)
class ImagePool:
    """Every image of one dataset split, decoded and resized once, ready for episode sampling.

    Attributes:
        images: ``(M, C, H, W)`` tensor, ``uint8`` (0..255) or ``float32`` (0..1).
        labels: ``(M,)`` int64 class index into ``class_names``.
        class_names: Names of the classes, in label order.
        name: Dataset (domain) name, e.g. ``"organamnist"``.
        groups: ``(M,)`` int64 group (patient) id, ``-1`` where unknown, or ``None`` when the dataset
            has no group column at all.
        split: The split these images come from (``"train"``, ``"val"``, ``"test"`` or ``"all"``).
        provenance: Free-form facts about the source (files and checksums), saved in checkpoints.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str
    groups: torch.Tensor | None = None
    split: str = "all"
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise MedfewError(f"pool {self.name!r}: images must be (M, C, H, W), got {tuple(self.images.shape)}")
        if self.images.dtype not in (torch.uint8, torch.float32):
            raise MedfewError(f"pool {self.name!r}: images must be uint8 or float32, got {self.images.dtype}")
        m = self.images.shape[0]
        if self.labels.shape != (m,):
            raise MedfewError(f"pool {self.name!r}: labels must be ({m},), got {tuple(self.labels.shape)}")
        if self.groups is not None and self.groups.shape != (m,):
            raise MedfewError(f"pool {self.name!r}: groups must be ({m},), got {tuple(self.groups.shape)}")
        if m and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise MedfewError(
                f"pool {self.name!r}: labels must lie in [0, {len(self.class_names)}), "
                f"got {self.labels.unique().tolist()}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def class_counts(self) -> dict[str, int]:
        """Images per class name."""
        counts = np.bincount(self.labels.numpy(), minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts)}

    def as_float(self, index: torch.Tensor) -> torch.Tensor:
        """Gather images by index as float32 in ``[0, 1]``.

        Args:
            index: ``(B,)`` int64 indices into the pool.

        Returns:
            ``(B, C, H, W)`` float32 tensor.
        """
        batch = self.images.index_select(0, index.to(self.images.device))
        if batch.dtype == torch.uint8:
            return batch.float().div_(255.0)
        return batch

    def capped(self, max_per_class: int, *, seed: int = 0) -> ImagePool:
        """At most ``max_per_class`` images of each class, a seeded random choice kept in pool order.

        Args:
            max_per_class: Images kept per class; 0 keeps every image (returns ``self``).
            seed: Seed of the choice (the same seed gives the same subset).

        Returns:
            The smaller pool (``self`` when no class exceeds the cap).

        Raises:
            MedfewError: A negative cap.
        """
        if isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or max_per_class < 0:
            raise MedfewError(f"pool {self.name!r}: max_per_class must be an integer >= 0, got {max_per_class!r}")
        labels = self.labels.numpy()
        if max_per_class == 0 or np.bincount(labels).max(initial=0) <= max_per_class:
            return self
        rng = np.random.default_rng(seed)
        keep = np.sort(np.concatenate([
            rng.permutation(np.flatnonzero(labels == c))[:max_per_class] for c in range(len(self.class_names))
        ]))
        index = torch.from_numpy(keep)
        return ImagePool(
            images=self.images.index_select(0, index),
            labels=self.labels.index_select(0, index),
            class_names=self.class_names,
            name=self.name,
            groups=None if self.groups is None else self.groups.index_select(0, index),
            split=self.split,
            provenance={**self.provenance, "max_per_class": max_per_class, "subset_seed": seed},
        )
