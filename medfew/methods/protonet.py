"""Prototypical networks (Snell et al. 2017) with optional SimpleShot feature normalisation and an
optional fitted head at test time (logistic regression on the support features, as in Tian et al. 2020)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfew.data.episodes.episode import Episode
from medfew.methods.base import FewShotMethod, check_leave_one_out, support_classes
from medfew.methods.finetune import FineTunableHead, finetuned_classifier, head_on_features, support_features
from medfew.methods.functional import FEATURE_TRANSFORMS, prototypes, transform_features
from medfew.methods.heads import LinearHeadClassifier, PrototypeClassifier, fit_logistic_head
from medfew.methods.registry import register_method
from medfew.models.checks import check_bool, check_choice, check_positive

__all__ = ["HEADS", "LinearHeadClassifier", "PrototypeClassifier", "ProtoNet", "fit_logistic_head"]

HEADS: tuple[str, ...] = ("prototype", "logistic", "finetune")


@register_method("protonet")
class ProtoNet(FineTunableHead, FewShotMethod):
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
    ``"finetune"`` starts a linear head from the scaled prototypes and fine-tunes it (and, with
    ``finetune_depth > 0``, the top backbone blocks) on the support set and its flipped copies
    (:mod:`medfew.methods.finetune`).

    Args:
        backbone: ``(B, C, H, W) -> (B, D)`` encoder.
        feature_transform: ``"none" | "l2" | "cl2"``.
        scale: Logit scale; ``None`` means 1 for ``"none"`` and 10 otherwise.
        learn_scale: Meta-learn the scale (stored as a log-scale parameter).
        head: ``"prototype" | "logistic" | "finetune"`` read-out of ``adapt``.
        head_c: Inverse L2-regularisation strength of the logistic head (scikit-learn ``C``).
        finetune_steps: Adam steps of the ``"finetune"`` head.
        finetune_lr: Its learning rate.
        finetune_depth: Top backbone blocks fine-tuned with it (0: the head alone, on fixed features).
        finetune_flip: Add flipped support scans as training points.
        finetune_scale: Logit scale of its prototype initialisation.
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
        finetune_steps: int = 50,
        finetune_lr: float = 0.01,
        finetune_depth: int = 0,
        finetune_flip: bool = True,
        finetune_scale: float = 10.0,
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
        self._setup_head(head, HEADS, steps=finetune_steps, lr=finetune_lr, depth=finetune_depth,
                         flip=finetune_flip, scale=finetune_scale)
        self.head_c = check_positive(self.name, "head_c", head_c)

    @property
    def _flips(self) -> bool:
        return self.head == "finetune" and self.finetune.flip

    def adapt(
        self, support_images: torch.Tensor, support_labels: torch.Tensor
    ) -> PrototypeClassifier | LinearHeadClassifier:
        """Adapt to a support set with the configured ``head``.

        Args:
            support_images: ``(N*K, C, H, W)`` float32.
            support_labels: ``(N*K,)`` int64 in ``[0, N)``.

        Returns:
            The prototype classifier (differentiable, for meta-training) or, for ``head="logistic"``
            and ``"finetune"``, a linear head fitted on the detached support features.
        """
        if self.head == "prototype":
            return self.prototype_classifier(support_images, support_labels)
        if self.head == "finetune" and self.finetune.depth > 0:
            return finetuned_classifier(self.backbone, support_images, support_labels, self.finetune,
                                        self.feature_transform)
        n_classes = support_classes(support_images, support_labels)
        raw, mirrored = support_features(self.backbone, support_images, self._flips)
        return self._fitted_head(raw, mirrored, support_labels, n_classes)

    def _fitted_head(
        self, raw: torch.Tensor, mirrored: torch.Tensor | None, labels: torch.Tensor, n_classes: int
    ) -> PrototypeClassifier | LinearHeadClassifier:
        """The configured read-out fitted on fixed support features ``(S, D)`` (``mirrored``: flipped copies)."""
        if self.head == "prototype":
            return self._prototype_head(raw, labels, n_classes)
        if self.head == "finetune":
            return head_on_features(self.backbone, raw, mirrored, labels, n_classes, self.finetune,
                                    self.feature_transform)
        centre = raw.mean(0) if self.feature_transform == "cl2" else None
        features = transform_features(raw, self.feature_transform, centre)
        weight, bias = fit_logistic_head(features, labels, n_classes, c=self.head_c)
        return LinearHeadClassifier(self.backbone, weight, bias, self.feature_transform, centre)

    def leave_one_out_logits(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> torch.Tensor:
        """Exact leave-one-out logits from features computed once (the backbone is fixed at test time).

        The ``"finetune"`` head trains all folds at once
        (:func:`~medfew.methods.finetune.finetune_heads_leave_one_out`); with its top blocks fine-tuned
        (``finetune_depth > 0``) it falls back to one ``adapt`` per image.

        Args:
            support_images: ``(S, C, H, W)``.
            support_labels: ``(S,)`` int64 in ``[0, N)``; every class needs at least 2 images.

        Returns:
            ``(S, N)`` raw logits, detached.
        """
        if self.head == "finetune":
            return super().leave_one_out_logits(support_images, support_labels)  # all folds at once, or the loop
        n_classes = support_classes(support_images, support_labels)
        check_leave_one_out(support_labels, n_classes)
        raw, mirrored = support_features(self.backbone, support_images, self._flips)
        rows = []
        for i in range(support_labels.shape[0]):
            keep = torch.arange(support_labels.shape[0], device=support_labels.device) != i
            head = self._fitted_head(raw[keep], None if mirrored is None else mirrored[keep], support_labels[keep], n_classes)
            with torch.no_grad():
                rows.append(head.predict_features(raw[i : i + 1]).detach())
        return torch.cat(rows)

    def prototype_classifier(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> PrototypeClassifier:
        """Compute the class prototypes of a support set (differentiable, for meta-training)."""
        n_classes = support_classes(support_images, support_labels)
        return self._prototype_head(self.backbone(support_images), support_labels, n_classes)

    def _prototype_head(self, raw: torch.Tensor, labels: torch.Tensor, n_classes: int) -> PrototypeClassifier:
        """Prototypes of ``(S, D)`` raw support features in the transformed space (differentiable)."""
        centre = raw.mean(0) if self.feature_transform == "cl2" else None
        protos = prototypes(transform_features(raw, self.feature_transform, centre), labels, n_classes)
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
            "head_c": self.head_c,
            **self._head_hyperparameters(),
        }
