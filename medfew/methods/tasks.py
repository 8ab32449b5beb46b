"""What the gradient-based methods pass around per task: :class:`TaskBatch`, the episodes of a
meta-batch stacked for ``torch.func.vmap``, and :class:`FunctionalClassifier`, the model one inner
loop yields (the backbone run with adapted parameters, then a linear head)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.func import functional_call

from medfew.data.episodes.episode import Episode
from medfew.methods.base import AdaptedModel
from medfew.methods.functional import linear_logits
from medfew.methods.inner_loop import Params, TaskParams


class TaskBatch(NamedTuple):
    """The episodes of a meta-batch stacked along a leading task axis ``T`` (one shape for all).

    Attributes:
        support_images: ``(T, S, C, H, W)``.
        support_labels: ``(T, S)`` int64.
        query_images: ``(T, M, C, H, W)``.
        query_labels: ``(T, M)`` int64.
        ways: ``N``, the same for every task.
    """

    support_images: torch.Tensor
    support_labels: torch.Tensor
    query_images: torch.Tensor
    query_labels: torch.Tensor
    ways: int

    @staticmethod
    def stack(episodes: Sequence[Episode]) -> TaskBatch | None:
        """Stack episodes of one shape, or return ``None`` when they differ (ways, sizes, dtype, device)."""
        if not episodes:
            return None
        first = episodes[0]

        def signature(e: Episode) -> tuple:
            return (e.ways, e.support_images.shape, e.query_images.shape, e.support_images.dtype,
                    e.query_images.dtype, e.support_images.device, e.query_images.device)

        if any(signature(e) != signature(first) for e in episodes[1:]):
            return None
        return TaskBatch(
            torch.stack([e.support_images for e in episodes]),
            torch.stack([e.support_labels for e in episodes]),
            torch.stack([e.query_images for e in episodes]),
            torch.stack([e.query_labels for e in episodes]),
            first.ways,
        )


class FunctionalClassifier(AdaptedModel):
    """A backbone run with adapted parameters (``functional_call``) followed by a linear head.

    Attributes:
        task: The adapted :class:`~medfew.methods.inner_loop.TaskParams` (detached at test time).
    """

    def __init__(self, backbone: nn.Module, task: TaskParams, buffers: Params) -> None:
        self.backbone = backbone
        self.task = task
        self.buffers = buffers
        self.n_classes = int(task.head_weight.shape[0])

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, D)`` features under the adapted backbone parameters."""
        return functional_call(self.backbone, {**self.task.backbone, **self.buffers}, (images,))

    def predict(self, query_images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, N)`` logits."""
        return linear_logits(self.embed(query_images), self.task.head_weight, self.task.head_bias)
