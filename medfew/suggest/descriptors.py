"""Task descriptors: what a support set looks like, computed from the support set alone.

A descriptor is a fixed-length vector of named statistics (:data:`DESCRIPTOR_NAMES`): the task's size
(classes, shots), its images (intensity, contrast, colour) and its support features under the model
(how far apart the classes are, how tight each class is, and the nearest-centroid leave-one-out
accuracy). These are the "meta-features" of auto-sklearn's warm start (Feurer et al. 2015): tasks
with close descriptors are expected to favour the same test-time settings. Query images and labels
are never an input. A statistic that a support set cannot give (a within-class spread with one
image per class, image statistics when only features are at hand) is ``NaN``;
:mod:`medfew.suggest.retrieval` compares tasks on the statistics both have.
"""

from __future__ import annotations

import math

import torch

from medfew.methods.base import support_classes

DESCRIPTOR_NAMES: tuple[str, ...] = (
    "ways",
    "shots",
    "channels",
    "pixel_mean",
    "pixel_std",
    "image_contrast",
    "colour_spread",
    "centroid_separation",
    "within_class_spread",
    "fisher_ratio",
    "nc_loo_accuracy",
)
"""Names of the descriptor's entries, in order."""


def support_descriptor(
    images: torch.Tensor | None, labels: torch.Tensor, features: torch.Tensor
) -> dict[str, float]:
    """Describe one support set.

    Args:
        images: ``(S, C, H, W)`` prepared support images in ``[0, 1]`` (before the model's
            normalisation), or ``None`` when only features are available (image statistics are ``NaN``).
        labels: ``(S,)`` int64 in ``[0, N)``, every class present.
        features: ``(S, D)`` support features under the model (``method.backbone(x)``).

    Returns:
        Name -> value for every name of :data:`DESCRIPTOR_NAMES` (``NaN`` where undefined).

    Raises:
        EpisodeError: Labels that skip a class, or shapes that disagree.
    """
    labels = labels.detach().cpu()
    features = features.detach().cpu().double()
    n_classes = support_classes(features.unsqueeze(-1).unsqueeze(-1), labels)
    counts = torch.bincount(labels, minlength=n_classes)
    out = {"ways": float(n_classes), "shots": float(counts.double().mean())}
    out.update(_image_statistics(images))
    out.update(_feature_statistics(_centred_unit(features), labels, counts))
    return out


def descriptor_vector(descriptor: dict[str, float]) -> list[float]:
    """The values of ``descriptor`` in :data:`DESCRIPTOR_NAMES` order (missing names are ``NaN``)."""
    return [float(descriptor.get(name, math.nan)) for name in DESCRIPTOR_NAMES]


def _image_statistics(images: torch.Tensor | None) -> dict[str, float]:
    names = ("channels", "pixel_mean", "pixel_std", "image_contrast", "colour_spread")
    if images is None:
        return dict.fromkeys(names, math.nan)
    x = images.detach().cpu().double()
    colour = x.std(dim=1, correction=0).mean() if x.shape[1] > 1 else torch.tensor(0.0)
    return {
        "channels": float(x.shape[1]),
        "pixel_mean": float(x.mean()),
        "pixel_std": float(x.std(correction=0)),
        "image_contrast": float(x.flatten(1).std(dim=1, correction=0).mean()),
        "colour_spread": float(colour),
    }


def _centred_unit(features: torch.Tensor) -> torch.Tensor:
    """``(S, D)`` features centred on their mean and put on the unit sphere (scale-free across models)."""
    centred = features - features.mean(0)
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _feature_statistics(z: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor) -> dict[str, float]:
    n_classes = len(counts)
    one_hot = torch.nn.functional.one_hot(labels, n_classes).double()  # (S, N)
    centroids = one_hot.T @ z / counts.double().unsqueeze(1)  # (N, D)
    pair = torch.cdist(centroids, centroids).pow(2)
    separation = float(pair.sum() / (n_classes * (n_classes - 1)))
    multi = counts >= 2
    spread = math.nan
    if bool(multi.any()):
        own = (z - centroids[labels]).pow(2).sum(1)  # (S,)
        keep = multi[labels]
        unbiased = own * (counts[labels].double() / (counts[labels].double() - 1).clamp_min(1))
        spread = float(unbiased[keep].mean())
    fisher = separation / spread if not math.isnan(spread) and spread > 0 else math.nan
    return {
        "centroid_separation": separation,
        "within_class_spread": spread,
        "fisher_ratio": fisher,
        "nc_loo_accuracy": _nearest_centroid_loo(z, labels, counts, centroids) if bool(multi.all()) else math.nan,
    }


def _nearest_centroid_loo(z: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
                          centroids: torch.Tensor) -> float:
    """Leave-one-out accuracy of the nearest class mean (each image's own class mean without it)."""
    distances = torch.cdist(z, centroids).pow(2)  # (S, N)
    n = counts[labels].double()
    own = centroids[labels] * (n / (n - 1)).unsqueeze(1) - z / (n - 1).unsqueeze(1)  # own mean without the image
    rows = torch.arange(len(labels))
    distances[rows, labels] = (z - own).pow(2).sum(1)
    return float((distances.argmin(1) == labels).double().mean())
