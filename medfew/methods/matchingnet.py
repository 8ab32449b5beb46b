"""Matching networks (Vinyals et al. 2016): cosine attention over the support set, optional FCE."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfew.data.episodes.episode import Episode
from medfew.errors import ConfigError
from medfew.methods.base import AdaptedModel, FewShotMethod, support_classes
from medfew.methods.finetune import FineTunableHead, finetuned_classifier
from medfew.methods.functional import attention_log_probs, cosine_similarity_matrix
from medfew.methods.heads import LinearHeadClassifier
from medfew.methods.registry import register_method
from medfew.models.checks import check_bool, check_int, check_positive


class FullContextEmbedding(nn.Module):
    """The full-context embeddings of Vinyals et al. (2016), appendix A.2.

    Support: ``g(x_i) = g'(x_i) + h_fwd_i + h_bwd_i`` from a bidirectional LSTM over the support set
    (in its given order). Query: ``steps`` of an attention LSTM that reads the contextual support,
    ``h_k = LSTM([f'(x), r_{k-1}], (h_{k-1}, c_{k-1})) + f'(x)`` with
    ``r = softmax(h_{k-1} g^T) g``. Each query row is processed independently.

    Args:
        dim: Feature size ``D``.
        steps: Attention-LSTM steps ``K``.
    """

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.query_cell = nn.LSTMCell(2 * dim, dim)

    def encode_support(self, features: torch.Tensor) -> torch.Tensor:
        """``(S, D) -> (S, D)`` support features in the context of the whole support set."""
        out, _ = self.support_lstm(features.unsqueeze(0))  # (1, S, 2D)
        forward, backward = out[0].chunk(2, dim=-1)
        return features + forward + backward

    def encode_query(self, features: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """``(M, D), (S, D) -> (M, D)`` query features attending over the contextual support."""
        hidden, cell = features, torch.zeros_like(features)
        for _ in range(self.steps):
            read = torch.softmax(hidden @ support.T, dim=-1) @ support
            hidden, cell = self.query_cell(torch.cat([features, read], dim=-1), (hidden, cell))
            hidden = hidden + features
        return hidden


class AttentionClassifier(AdaptedModel):
    """``log p(c | x) = log sum_{i: y_i = c} softmax_i(scale * cos(f(x), g(x_i)))``."""

    def __init__(
        self,
        backbone: nn.Module,
        support: torch.Tensor,
        support_labels: torch.Tensor,
        n_classes: int,
        scale: float,
        fce: FullContextEmbedding | None,
    ) -> None:
        self.backbone = backbone
        self.support = support
        self.support_labels = support_labels
        self.n_classes = n_classes
        self.scale = scale
        self.fce = fce

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, D)`` query features (contextualised by the support with FCE)."""
        features = self.backbone(images)
        return features if self.fce is None else self.fce.encode_query(features, self.support)

    def predict(self, query_images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, N)`` log-probabilities."""
        similarities = self.scale * cosine_similarity_matrix(self.embed(query_images), self.support)
        return attention_log_probs(similarities, self.support_labels, self.n_classes)


@register_method("matchingnet")
class MatchingNet(FineTunableHead, FewShotMethod):
    """Cosine attention over the support set, summed per class into log-probabilities.

    Args:
        backbone: ``(B, C, H, W) -> (B, D)`` encoder with a ``feature_dim`` attribute (for FCE).
        fce: Use full-context embeddings (:class:`FullContextEmbedding`).
        fce_steps: Attention-LSTM steps of the query encoder.
        scale: Multiplies the cosine similarities before the softmax (1 in the original paper).
        head: The read-out of ``adapt``: ``"attention"`` or ``"finetune"`` (a linear head on L2-normalised
            features, started from the prototypes and fine-tuned on the support set; see
            :mod:`medfew.methods.finetune`, whose ``finetune_*`` settings the next arguments are).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        fce: bool = False,
        fce_steps: int = 3,
        scale: float = 1.0,
        head: str = "attention",
        finetune_steps: int = 50,
        finetune_lr: float = 0.01,
        finetune_depth: int = 0,
        finetune_flip: bool = True,
        finetune_scale: float = 10.0,
    ) -> None:
        super().__init__(backbone)
        self._setup_head(head, ("attention", "finetune"), steps=finetune_steps, lr=finetune_lr,
                         depth=finetune_depth, flip=finetune_flip, scale=finetune_scale)
        self.use_fce = check_bool(self.name, "fce", fce)
        self.fce_steps = check_int(self.name, "fce_steps", fce_steps, 1)
        self.scale = check_positive(self.name, "scale", scale)
        self.fce: FullContextEmbedding | None = None
        if fce:
            dim = getattr(backbone, "feature_dim", None)
            if not isinstance(dim, int):
                raise ConfigError(f"{self.name}: fce=True needs a backbone with an integer feature_dim, got {dim!r}")
            self.fce = FullContextEmbedding(dim, fce_steps)

    def adapt(
        self, support_images: torch.Tensor, support_labels: torch.Tensor
    ) -> AttentionClassifier | LinearHeadClassifier:
        """The configured read-out: attention over the support set, or a fine-tuned linear head."""
        if self.head == "finetune":
            return finetuned_classifier(self.backbone, support_images, support_labels, self.finetune, "l2")
        return self.attention_classifier(support_images, support_labels)

    def attention_classifier(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> AttentionClassifier:
        """Embed (and contextualise) the support set (differentiable, for meta-training)."""
        n_classes = support_classes(support_images, support_labels)
        support = self.backbone(support_images)
        if self.fce is not None:
            support = self.fce.encode_support(support)
        return AttentionClassifier(self.backbone, support, support_labels, n_classes, self.scale, self.fce)

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative log-likelihood of the query labels; returns ``(loss, (M, N) log-probabilities)``."""
        classifier = self.attention_classifier(episode.support_images, episode.support_labels)
        log_probs = classifier.predict(episode.query_images)
        return F.nll_loss(log_probs, episode.query_labels), log_probs

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor keyword arguments."""
        return {"fce": self.use_fce, "fce_steps": self.fce_steps, "scale": self.scale, **self._head_hyperparameters()}
