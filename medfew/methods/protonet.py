"""Prototypical networks (Snell et al. 2017) with optional SimpleShot feature normalisation."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfew.data.episode import Episode
from medfew.methods.base import AdaptedModel, FewShotMethod, support_classes
from medfew.methods.functional import (
    FEATURE_TRANSFORMS,
    prototypes,
    squared_euclidean,
    transform_features,
)
from medfew.methods.registry import register_method
from medfew.models.checks import check_bool, check_choice, check_positive


class PrototypeClassifier(AdaptedModel):
    """Scores queries by ``-scale * ||t(f(x)) - p_c||^2`` against the (transformed) class means.

    Attributes:
        prototypes: ``(N, D)`` class means in the transformed feature space.
        centre: ``(D,)`` support-feature mean used by ``"cl2"``, else ``None``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        prototypes: torch.Tensor,
        feature_transform: str,
        centre: torch.Tensor | None,
        scale: torch.Tensor,
    ) -> None:
        self.backbone = backbone
        self.prototypes = prototypes
        self.feature_transform = feature_transform
        self.centre = centre
        self.scale = scale
        self.n_classes = int(prototypes.shape[0])

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, D)`` transformed features (the space the prototypes live in)."""
        return transform_features(self.backbone(images), self.feature_transform, self.centre)

    def predict(self, query_images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, N)`` logits."""
        return -self.scale * squared_euclidean(self.embed(query_images), self.prototypes)


@register_method("protonet")
class ProtoNet(FewShotMethod):
    """Squared Euclidean distance to class means of the support features.

    ``feature_transform`` normalises features at train and test time: ``"l2"`` projects them on the
    unit sphere, ``"cl2"`` first centres them on the support mean (SimpleShot, which is known to help
    cross-domain transfer). Distances between unit vectors lie in ``[0, 4]``, so those transforms
    need a larger logit ``scale`` (a fixed temperature, default 10; ``learn_scale=True`` meta-learns
    it, as in TADAM's metric scaling).

    Args:
        backbone: ``(B, C, H, W) -> (B, D)`` encoder.
        feature_transform: ``"none" | "l2" | "cl2"``.
        scale: Logit scale; ``None`` means 1 for ``"none"`` and 10 otherwise.
        learn_scale: Meta-learn the scale (stored as a log-scale parameter).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        feature_transform: str = "none",
        scale: float | None = None,
        learn_scale: bool = False,
    ) -> None:
        super().__init__(backbone)
        self.feature_transform = check_choice(self.name, "feature_transform", feature_transform, FEATURE_TRANSFORMS)
        if scale is None:
            scale = 1.0 if feature_transform == "none" else 10.0
        self.initial_scale = check_positive(self.name, "scale", scale)
        self.learn_scale = check_bool(self.name, "learn_scale", learn_scale)
        log_scale = torch.tensor(math.log(self.initial_scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def adapt(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> PrototypeClassifier:
        """Compute the class prototypes of a support set (differentiable, for meta-training)."""
        n_classes = support_classes(support_images, support_labels)
        features = self.backbone(support_images)
        centre = features.mean(0) if self.feature_transform == "cl2" else None
        features = transform_features(features, self.feature_transform, centre)
        protos = prototypes(features, support_labels, n_classes)
        return PrototypeClassifier(self.backbone, protos, self.feature_transform, centre, self.log_scale.exp())

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the query logits; returns ``(loss, (M, N) logits)``."""
        logits = self.adapt(episode.support_images, episode.support_labels).predict(episode.query_images)
        return F.cross_entropy(logits, episode.query_labels), logits

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor keyword arguments (the initial scale; a learnt one is in the state dict)."""
        return {
            "feature_transform": self.feature_transform,
            "scale": self.initial_scale,
            "learn_scale": self.learn_scale,
        }
