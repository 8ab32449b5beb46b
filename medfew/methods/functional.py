"""Pure tensor math shared by the few-shot methods (no modules, no state).

Shapes: ``S`` support images, ``M`` queries, ``N`` classes, ``D`` feature size. Everything here is
differentiable and works under ``torch.func`` transforms (no data-dependent shapes, no in-place ops),
so the MAML inner loop can be ``vmap``-ed over tasks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medfew.errors import ConfigError

FEATURE_TRANSFORMS: tuple[str, ...] = ("none", "l2", "cl2")
EPS = 1e-8


def class_one_hot(labels: torch.Tensor, n_classes: int, like: torch.Tensor) -> torch.Tensor:
    """``(S,)`` int64 labels -> ``(S, N)`` one-hot with the dtype and device of ``like``."""
    return F.one_hot(labels, n_classes).to(dtype=like.dtype, device=like.device)


def prototypes(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class means of the support features.

    Args:
        features: ``(S, D)``.
        labels: ``(S,)`` int64 in ``[0, N)``; every class present.
        n_classes: ``N``.

    Returns:
        ``(N, D)``; row ``c`` is the mean of the features labelled ``c``.
    """
    one_hot = class_one_hot(labels, n_classes, features)
    return one_hot.T @ features / one_hot.sum(0).unsqueeze(1)


def squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(M, D), (N, D) -> (M, N)`` squared Euclidean distances (exact: no expansion, never negative)."""
    return (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(M, D), (N, D) -> (M, N)`` cosine similarities in ``[-1, 1]``."""
    return F.normalize(a, dim=-1, eps=EPS) @ F.normalize(b, dim=-1, eps=EPS).T


def transform_features(features: torch.Tensor, kind: str, centre: torch.Tensor | None = None) -> torch.Tensor:
    """Test-time feature normalisation (SimpleShot, Wang et al. 2019).

    Args:
        features: ``(B, D)``.
        kind: ``"none"`` (identity), ``"l2"`` (unit norm) or ``"cl2"`` (subtract ``centre``, then
            unit norm).
        centre: ``(D,)`` the support-feature mean; required for ``"cl2"``.

    Returns:
        ``(B, D)``.
    """
    if kind == "none":
        return features
    if kind == "cl2":
        if centre is None:
            raise ConfigError("transform_features: 'cl2' needs the support mean as centre")
        features = features - centre
    elif kind != "l2":
        raise ConfigError(f"transform_features: kind must be one of {list(FEATURE_TRANSFORMS)}, got {kind!r}")
    return F.normalize(features, dim=-1, eps=EPS)


def attention_log_probs(similarities: torch.Tensor, support_labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Matching-network read-out: softmax attention over the support, summed per class, in log space.

    ``log p(c | q) = logsumexp_{i: y_i = c} s_qi - logsumexp_i s_qi``, computed without forming the
    probabilities (stable for large similarities).

    Args:
        similarities: ``(M, S)`` query-support similarities (already scaled).
        support_labels: ``(S,)`` int64 in ``[0, N)``; every class present.
        n_classes: ``N``.

    Returns:
        ``(M, N)`` log-probabilities; ``exp`` of each row sums to 1.
    """
    member = class_one_hot(support_labels, n_classes, similarities).T.bool()  # (N, S)
    masked = similarities.unsqueeze(1).masked_fill(~member.unsqueeze(0), float("-inf"))  # (M, N, S)
    return masked.logsumexp(-1) - similarities.logsumexp(-1, keepdim=True)


def proto_head(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Proto-MAML linear head (Triantafillou et al. 2020): ``W = 2 P``, ``b = -||P||^2``.

    With it, ``f @ W.T + b = -||f - P||^2 + ||f||^2``: the prototype classifier, for any ``N``.

    Args:
        features: ``(S, D)`` support features.
        labels: ``(S,)`` int64 in ``[0, N)``.
        n_classes: ``N``.

    Returns:
        ``W`` ``(N, D)`` and ``b`` ``(N,)``.
    """
    protos = prototypes(features, labels, n_classes)
    return 2 * protos, -protos.pow(2).sum(-1)


def zero_head(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An all-zero linear head ``W`` ``(N, D)``, ``b`` ``(N,)`` (uniform predictions before adaptation)."""
    weight = features.new_zeros(n_classes, features.shape[-1])
    return weight, features.new_zeros(n_classes)


def linear_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``(B, D), (N, D), (N,) -> (B, N)`` logits ``f @ W.T + b``."""
    return features @ weight.T + bias


def cosine_logits(features: torch.Tensor, weight: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """``(B, D), (N, D) -> (B, N)`` scaled cosine-classifier logits (Baseline++, Chen et al. 2019)."""
    return scale * cosine_similarity_matrix(features, weight)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(M, N), (M,) -> ()`` detached fraction of correct arg-max predictions."""
    return (logits.argmax(-1) == labels).float().mean().detach()
