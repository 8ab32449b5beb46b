"""The contract every few-shot method follows.

A method is an ``nn.Module`` holding its meta-learned parameters (a backbone and any extras). The
training loop, evaluation and the clinician session only ever call:

* ``adapt(support_images, support_labels) -> AdaptedModel`` then ``adapted.predict(query_images)``;
* ``training_step(episodes) -> StepOutput`` during meta-training, which leaves meta-gradients in
  ``.grad`` of ``parameters()`` for the shared optimiser to apply.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from medfew.data.episodes.episode import Episode
from medfew.errors import EpisodeError


@dataclass
class StepOutput:
    """What one meta-training step reports (detached scalars, for logging).

    Attributes:
        loss: Mean query loss over the meta-batch.
        accuracy: Mean query accuracy over the meta-batch.
    """

    loss: torch.Tensor
    accuracy: torch.Tensor


class AdaptedModel(ABC):
    """A model adapted to one support set; maps query images to logits over its classes."""

    n_classes: int

    @abstractmethod
    def predict(self, query_images: torch.Tensor) -> torch.Tensor:
        """Score query images.

        Args:
            query_images: ``(M, C, H, W)`` float32.

        Returns:
            ``(M, N)`` logits (differentiable with respect to ``query_images`` for saliency).
        """

    def embed(self, images: torch.Tensor) -> torch.Tensor | None:
        """``(M, C, H, W) -> (M, D)`` features used for out-of-distribution checks, or ``None``."""
        return None


class FewShotMethod(nn.Module, ABC):
    """Base class of all methods. Subclasses set ``name`` and implement ``adapt`` and ``episode_loss``.

    Attributes:
        temperature: Logit temperature ``T > 0`` fitted on validation episodes of the meta-train
            domains (a checkpoint's ``calibration``); calibrated probabilities are
            ``softmax(logits / T)``. ``adapt``/``predict`` return raw logits; evaluation and the
            clinician session divide by it. 1.0 means uncalibrated.
    """

    name: str = ""
    temperature: float = 1.0

    @property
    def reads_fixed_features(self) -> bool:
        """Whether test-time ``adapt``/``predict`` see images only through ``backbone(x)`` and
        ``backbone(x.flip(-1))`` with the backbone unchanged (so features can be computed once per image).
        """
        return False

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    @abstractmethod
    def adapt(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> AdaptedModel:
        """Adapt to a support set.

        Args:
            support_images: ``(N*K, C, H, W)`` float32.
            support_labels: ``(N*K,)`` int64 in ``[0, N)``.
        """

    @abstractmethod
    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable query loss of one episode and its ``(M, N)`` query logits."""

    def training_step(self, episodes: Sequence[Episode]) -> StepOutput:
        """Compute the meta-loss of a meta-batch and backpropagate it into ``.grad``.

        The default averages ``episode_loss`` over the episodes; methods with a different outer update
        (Reptile) override this and write their update direction into ``.grad`` instead.
        """
        losses, accuracies = [], []
        for episode in episodes:
            loss, logits = self.episode_loss(episode)
            (loss / len(episodes)).backward()
            # stay on the device: the loop reads these figures only when it logs (no sync per episode)
            losses.append(loss.detach().float())
            accuracies.append((logits.argmax(-1) == episode.query_labels).float().mean().detach())
        return StepOutput(loss=torch.stack(losses).mean(), accuracy=torch.stack(accuracies).mean())

    def leave_one_out_logits(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> torch.Tensor:
        """Score every support image with the model adapted to all the *other* support images.

        The nonconformity scores of conformal prediction sets come from these. This default runs one
        ``adapt`` per image; methods whose adaptation reads fixed features override it with a
        cheaper exact equivalent.

        Args:
            support_images: ``(S, C, H, W)`` float32.
            support_labels: ``(S,)`` int64 in ``[0, N)``; every class needs at least 2 images.

        Returns:
            ``(S, N)`` raw logits (not divided by :attr:`temperature`), detached.

        Raises:
            EpisodeError: A class with fewer than 2 images (it would vanish when its image is left out).
        """
        n_classes = support_classes(support_images, support_labels)
        check_leave_one_out(support_labels, n_classes)
        rows = []
        for i in range(support_labels.shape[0]):
            keep = torch.arange(support_labels.shape[0], device=support_labels.device) != i
            with torch.enable_grad():  # MAML-family methods take gradient steps inside adapt
                adapted = self.adapt(support_images[keep], support_labels[keep])
            with torch.no_grad():
                rows.append(adapted.predict(support_images[i : i + 1]).detach())
        return torch.cat(rows)

    def hyperparameters(self) -> dict:
        """JSON-serialisable hyperparameters, saved in checkpoints and rebuilt by the registry."""
        return {}


MIN_CLASSES = 2
"""A support set needs at least this many classes."""

MIN_LEAVE_ONE_OUT = 2
"""Leave-one-out needs at least this many support images per class (one left out, one kept)."""

_Class = TypeVar("_Class")


def support_shortfall(counts: Mapping[_Class, int], *, per_class: int = 1) -> tuple[bool, list[_Class]]:
    """The one rule of a support set, on its class -> number of images (classes by index or by name).

    Every support check (these label tensors, the raw-pixel baselines, the clinician session's class
    names) applies it and words its own error.

    Args:
        counts: Images per class, in class order (a class without images counts 0).
        per_class: The fewest images a class needs: 1 to adapt, :data:`MIN_LEAVE_ONE_OUT` for leave-one-out.

    Returns:
        Whether there are fewer than :data:`MIN_CLASSES` classes, and the classes with fewer than
        ``per_class`` images (in ``counts`` order).
    """
    return len(counts) < MIN_CLASSES, [c for c, n in counts.items() if n < per_class]


def support_classes(support_images: torch.Tensor, support_labels: torch.Tensor) -> int:
    """Check a support set and return its number of classes ``N``.

    Args:
        support_images: ``(S, C, H, W)``.
        support_labels: ``(S,)`` int64 in ``[0, N)``, every class present.

    Raises:
        EpisodeError: Wrong shapes or dtype, or a class in ``[0, max label]`` without an image.
    """
    if support_images.ndim != 4 or support_labels.ndim != 1 or support_labels.shape[0] != support_images.shape[0]:
        raise EpisodeError(
            f"support images must be (S, C, H, W) and labels (S,), got {tuple(support_images.shape)} "
            f"and {tuple(support_labels.shape)}"
        )
    if support_labels.dtype != torch.int64 or not support_labels.numel() or int(support_labels.min()) < 0:
        raise EpisodeError(
            f"support labels must be non-empty int64 in [0, N), got {support_labels.dtype} "
            f"{support_labels.unique().tolist()}"
        )
    counts = torch.bincount(support_labels).tolist()
    too_few, empty = support_shortfall(dict(enumerate(counts)))
    if too_few or empty:
        raise EpisodeError(
            f"support labels must cover every class 0..N-1 with N >= {MIN_CLASSES}, got counts {counts}"
        )
    return len(counts)


def check_leave_one_out(support_labels: torch.Tensor, n_classes: int) -> None:
    """Refuse a support set in which leaving one image out could empty a class.

    Raises:
        EpisodeError: Naming the classes with fewer than 2 images.
    """
    counts = torch.bincount(support_labels, minlength=n_classes).tolist()
    _, small = support_shortfall(dict(enumerate(counts)), per_class=MIN_LEAVE_ONE_OUT)
    if small:
        raise EpisodeError(
            f"leave-one-out needs at least {MIN_LEAVE_ONE_OUT} support images per class; classes {small} have "
            f"{[counts[c] for c in small]}"
        )
