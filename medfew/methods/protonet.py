"""Prototypical networks (Snell et al. 2017) with optional SimpleShot feature normalisation and an
optional fitted head at test time (logistic regression on the support features, as in Tian et al. 2020)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfew.data.episode import Episode
from medfew.methods.base import AdaptedModel, FewShotMethod, support_classes
from medfew.methods.functional import (
    FEATURE_TRANSFORMS,
    linear_logits,
    prototypes,
    squared_euclidean,
    transform_features,
)
from medfew.methods.registry import register_method
from medfew.models.checks import check_bool, check_choice, check_positive


class _TransformedFeatureClassifier(AdaptedModel):
    """An adapted model that scores queries in the backbone's transformed feature space ``t(f(x))``.

    Attributes:
        feature_transform: ``"none"``, ``"l2"`` or ``"cl2"`` (see ``transform_features``).
        centre: ``(D,)`` support-feature mean used by ``"cl2"``, else ``None``.
    """

    def __init__(self, backbone: nn.Module, feature_transform: str, centre: torch.Tensor | None) -> None:
        self.backbone = backbone
        self.feature_transform = feature_transform
        self.centre = centre

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, D)`` transformed features (the space the classifier lives in)."""
        return transform_features(self.backbone(images), self.feature_transform, self.centre)


class PrototypeClassifier(_TransformedFeatureClassifier):
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
        super().__init__(backbone, feature_transform, centre)
        self.prototypes = prototypes
        self.scale = scale
        self.n_classes = int(prototypes.shape[0])

    def predict(self, query_images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, N)`` logits."""
        return -self.scale * squared_euclidean(self.embed(query_images), self.prototypes)


HEADS: tuple[str, ...] = ("prototype", "logistic")


class LinearHeadClassifier(_TransformedFeatureClassifier):
    """Scores queries by ``t(f(x)) @ W.T + b`` with a head fitted on the (transformed) support features.

    Attributes:
        weight: ``(N, D)`` fitted head weights (detached).
        bias: ``(N,)`` fitted head biases (detached).
        centre: ``(D,)`` support-feature mean used by ``"cl2"``, else ``None``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        weight: torch.Tensor,
        bias: torch.Tensor,
        feature_transform: str,
        centre: torch.Tensor | None,
    ) -> None:
        super().__init__(backbone, feature_transform, centre)
        self.weight = weight
        self.bias = bias
        self.n_classes = int(weight.shape[0])

    def predict(self, query_images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, N)`` logits (differentiable with respect to the images)."""
        return linear_logits(self.embed(query_images), self.weight, self.bias)


def fit_logistic_head(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, *, c: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit an L2-regularised multinomial logistic regression (scikit-learn, L-BFGS) on support features.

    Deterministic (L-BFGS from zero weights). A two-class fit gives one decision function ``z``;
    it is returned as the softmax-equivalent pair of logits ``(-z/2, z/2)``.

    Args:
        features: ``(S, D)`` support features (already transformed, e.g. centred and L2-normalised).
        labels: ``(S,)`` int64 in ``[0, N)``; every class present.
        n_classes: ``N``.
        c: Inverse regularisation strength (scikit-learn's ``C``).

    Returns:
        ``W`` ``(N, D)`` and ``b`` ``(N,)`` with the dtype and device of ``features``, detached.
    """
    from sklearn.linear_model import LogisticRegression

    x = features.detach().to("cpu", torch.float64).numpy()
    y = labels.detach().cpu().numpy()
    classifier = LogisticRegression(C=c, max_iter=1000).fit(x, y)
    weight, bias = classifier.coef_, classifier.intercept_
    if n_classes == 2 and weight.shape[0] == 1:
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.concatenate([-bias / 2, bias / 2])
    like = {"dtype": features.dtype, "device": features.device}
    return torch.as_tensor(np.ascontiguousarray(weight), **like), torch.as_tensor(np.ascontiguousarray(bias), **like)


@register_method("protonet")
class ProtoNet(FewShotMethod):
    """Squared Euclidean distance to class means of the support features.

    ``feature_transform`` normalises features at train and test time: ``"l2"`` projects them on the
    unit sphere, ``"cl2"`` first centres them on the support mean (SimpleShot, which is known to help
    cross-domain transfer). Distances between unit vectors lie in ``[0, 4]``, so those transforms
    need a larger logit ``scale`` (a fixed temperature, default 10; ``learn_scale=True`` meta-learns
    it, as in TADAM's metric scaling).

    ``head`` chooses the read-out of ``adapt`` (the few-shot classifier used at evaluation and in the
    app): ``"prototype"`` (nearest class mean) or ``"logistic"``, a logistic regression fitted on the
    transformed support features (Tian et al. 2020, "Rethinking few-shot image classification": a
    fitted head on normalised meta-trained features transfers better than the nearest prototype).
    Meta-training always uses the prototype read-out (``episode_loss``), so ``head`` is a test-time
    option that fits any trained ProtoNet checkpoint (``--method-option head=logistic``).

    Args:
        backbone: ``(B, C, H, W) -> (B, D)`` encoder.
        feature_transform: ``"none" | "l2" | "cl2"``.
        scale: Logit scale; ``None`` means 1 for ``"none"`` and 10 otherwise.
        learn_scale: Meta-learn the scale (stored as a log-scale parameter).
        head: ``"prototype" | "logistic"`` read-out of ``adapt``.
        head_c: Inverse L2-regularisation strength of the logistic head (scikit-learn ``C``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        feature_transform: str = "none",
        scale: float | None = None,
        learn_scale: bool = False,
        head: str = "prototype",
        head_c: float = 1.0,
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
        self.head = check_choice(self.name, "head", head, HEADS)
        self.head_c = check_positive(self.name, "head_c", head_c)

    def adapt(
        self, support_images: torch.Tensor, support_labels: torch.Tensor
    ) -> PrototypeClassifier | LinearHeadClassifier:
        """Adapt to a support set with the configured ``head``.

        Args:
            support_images: ``(N*K, C, H, W)`` float32.
            support_labels: ``(N*K,)`` int64 in ``[0, N)``.

        Returns:
            The prototype classifier (differentiable, for meta-training) or, for ``head="logistic"``,
            a linear head fitted on the detached support features.
        """
        if self.head == "prototype":
            return self.prototype_classifier(support_images, support_labels)
        n_classes = support_classes(support_images, support_labels)
        with torch.no_grad():
            features = self.backbone(support_images)
            centre = features.mean(0) if self.feature_transform == "cl2" else None
            features = transform_features(features, self.feature_transform, centre)
        weight, bias = fit_logistic_head(features, support_labels, n_classes, c=self.head_c)
        return LinearHeadClassifier(self.backbone, weight, bias, self.feature_transform, centre)

    def prototype_classifier(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> PrototypeClassifier:
        """Compute the class prototypes of a support set (differentiable, for meta-training)."""
        n_classes = support_classes(support_images, support_labels)
        features = self.backbone(support_images)
        centre = features.mean(0) if self.feature_transform == "cl2" else None
        features = transform_features(features, self.feature_transform, centre)
        protos = prototypes(features, support_labels, n_classes)
        return PrototypeClassifier(self.backbone, protos, self.feature_transform, centre, self.log_scale.exp())

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the prototype logits of the queries (whatever ``head``); returns ``(loss, (M, N) logits)``."""
        adapted = self.prototype_classifier(episode.support_images, episode.support_labels)
        logits = adapted.predict(episode.query_images)
        return F.cross_entropy(logits, episode.query_labels), logits

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor keyword arguments (the initial scale; a learnt one is in the state dict)."""
        return {
            "feature_transform": self.feature_transform,
            "scale": self.initial_scale,
            "learn_scale": self.learn_scale,
            "head": self.head,
            "head_c": self.head_c,
        }
