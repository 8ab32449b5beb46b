"""The read-outs of embedding methods: a prototype classifier and a linear head on transformed features.

Both score queries in the backbone's transformed feature space ``t(f(x))`` (``t``: ``"none"``, ``"l2"``
or ``"cl2"``, see :func:`~medfew.methods.functional.transform_features`), and both can score features
computed beforehand (``predict_features``), which makes exact leave-one-out cheap.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medfew.methods.base import AdaptedModel
from medfew.methods.functional import linear_logits, squared_euclidean, transform_features


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

    def predict(self, query_images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, N)`` logits (differentiable with respect to the images)."""
        return self.score(self.embed(query_images))

    def predict_features(self, features: torch.Tensor) -> torch.Tensor:
        """``(M, D)`` raw backbone features -> ``(M, N)`` logits (the same as ``predict`` on their images)."""
        return self.score(transform_features(features, self.feature_transform, self.centre))

    def score(self, embedded: torch.Tensor) -> torch.Tensor:
        """``(M, D)`` transformed features -> ``(M, N)`` logits."""
        raise NotImplementedError


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

    def score(self, embedded: torch.Tensor) -> torch.Tensor:
        """``(M, D) -> (M, N)`` logits ``-scale * ||t(f(x)) - p_c||^2``."""
        return -self.scale * squared_euclidean(embedded, self.prototypes)




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

    def score(self, embedded: torch.Tensor) -> torch.Tensor:
        """``(M, D) -> (M, N)`` logits ``t(f(x)) @ W.T + b``."""
        return linear_logits(embedded, self.weight, self.bias)


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
