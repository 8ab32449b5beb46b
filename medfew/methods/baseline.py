"""Baseline++ (Chen et al. 2019): pre-train a cosine classifier over all meta-train classes, then fit a
new cosine head on frozen support features."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfew.data.episodes.episode import Episode
from medfew.errors import EpisodeError
from medfew.methods.base import AdaptedModel, FewShotMethod, support_classes
from medfew.methods.finetune import FineTunableHead, adam_steps, finetuned_classifier
from medfew.methods.functional import cosine_logits, prototypes
from medfew.methods.heads import LinearHeadClassifier
from medfew.methods.inner_loop import gradients_enabled
from medfew.methods.registry import register_method
from medfew.models.checks import check_int, check_positive


class CosineClassifier(AdaptedModel):
    """``scale * cos(f(x), w_c)`` with a fitted, frozen weight ``w`` ``(N, D)``."""

    def __init__(self, backbone: nn.Module, weight: torch.Tensor, scale: float) -> None:
        self.backbone = backbone
        self.weight = weight
        self.scale = scale
        self.n_classes = int(weight.shape[0])

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, D)`` unit-norm features."""
        return F.normalize(self.backbone(images), dim=-1)

    def predict(self, query_images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, N)`` logits."""
        return cosine_logits(self.backbone(query_images), self.weight, self.scale)


@register_method("baseline")
class BaselinePlusPlus(FineTunableHead, FewShotMethod):
    """Baseline++: plain supervised pre-training with a cosine classifier, few-shot by a new head.

    Training treats each episode's support + query images as one batch labelled with the global
    class ids (``episode.global_class_ids``). ``adapt`` embeds the support once without gradients
    and fits a new cosine head by ``adapt_steps`` full-batch Adam steps, starting from the
    normalised class means (deterministic: no random init, no sampling).

    Args:
        backbone: ``(B, C, H, W) -> (B, D)`` encoder with a ``feature_dim`` attribute.
        num_classes: Number of meta-train classes (the size of the sampler's class vocabulary).
        scale: Cosine-logit scale (the classifier's inverse temperature).
        adapt_steps: Adam steps of the test-time head.
        adapt_lr: Adam learning rate of the test-time head.
        head: The read-out of ``adapt``: ``"cosine"`` or ``"finetune"`` (a linear head on L2-normalised
            features, started from the prototypes and fine-tuned on the support set; see
            :mod:`medfew.methods.finetune`, whose ``finetune_*`` settings the next arguments are).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_classes: int,
        scale: float = 10.0,
        adapt_steps: int = 100,
        adapt_lr: float = 0.01,
        head: str = "cosine",
        finetune_steps: int = 50,
        finetune_lr: float = 0.01,
        finetune_depth: int = 0,
        finetune_flip: bool = True,
        finetune_scale: float = 10.0,
    ) -> None:
        super().__init__(backbone)
        self._setup_head(head, ("cosine", "finetune"), steps=finetune_steps, lr=finetune_lr,
                         depth=finetune_depth, flip=finetune_flip, scale=finetune_scale)
        self.num_classes = check_int(self.name, "num_classes", num_classes, 2)
        self.scale = check_positive(self.name, "scale", scale)
        self.adapt_steps = check_int(self.name, "adapt_steps", adapt_steps, 0)
        self.adapt_lr = check_positive(self.name, "adapt_lr", adapt_lr)
        dim = check_int(self.name, "backbone.feature_dim", getattr(backbone, "feature_dim", None), 1)
        self.classifier = nn.Parameter(torch.randn(num_classes, dim) / math.sqrt(dim))

    def adapt(
        self, support_images: torch.Tensor, support_labels: torch.Tensor
    ) -> CosineClassifier | LinearHeadClassifier:
        """Fit a new cosine head on the frozen support features (or the ``"finetune"`` head)."""
        if self.head == "finetune":
            return finetuned_classifier(self.backbone, support_images, support_labels, self.finetune, "l2")
        n_classes = support_classes(support_images, support_labels)
        with torch.no_grad():
            features = F.normalize(self.backbone(support_images), dim=-1)
        with gradients_enabled():
            features, labels = features.clone(), support_labels.clone()
            weight = F.normalize(prototypes(features, labels, n_classes), dim=-1)
            (weight,) = adam_steps(
                lambda w: F.cross_entropy(cosine_logits(features, w[0], self.scale), labels),
                [weight],
                steps=self.adapt_steps,
                lr=self.adapt_lr,
            )
        return CosineClassifier(self.backbone, weight, self.scale)

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Global-class cross-entropy on support + query; returns ``(loss, (M, N) episode logits)``.

        Raises:
            EpisodeError: The episode has no ``global_class_ids``, or one is outside ``[0, num_classes)``.
        """
        ids = episode.global_class_ids
        if ids is None:
            raise EpisodeError(
                f"{self.name}: training needs episodes with global_class_ids (source {episode.source!r})"
            )
        if int(ids.min()) < 0 or int(ids.max()) >= self.num_classes:
            raise EpisodeError(
                f"{self.name}: global_class_ids {ids.tolist()} outside [0, {self.num_classes}) "
                f"(num_classes={self.num_classes})"
            )
        images = torch.cat([episode.support_images, episode.query_images])
        labels = ids[torch.cat([episode.support_labels, episode.query_labels])]
        logits = cosine_logits(self.backbone(images), self.classifier, self.scale)
        query_logits = logits[episode.support_labels.shape[0] :][:, ids]
        return F.cross_entropy(logits, labels), query_logits

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor keyword arguments."""
        return {
            "num_classes": self.num_classes,
            "scale": self.scale,
            "adapt_steps": self.adapt_steps,
            "adapt_lr": self.adapt_lr,
            **self._head_hyperparameters(),
        }
