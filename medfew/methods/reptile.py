"""Reptile (Nichol et al. 2018): move the meta-parameters toward task-adapted parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfew.data.episode import Episode
from medfew.methods.base import StepOutput
from medfew.methods.functional import accuracy
from medfew.methods.gradient_based import GradientBasedMethod
from medfew.methods.registry import register_method


@register_method("reptile")
class Reptile(GradientBasedMethod):
    """Reptile with a linear head initialised per episode (as in MAML, for any ``N``).

    ``training_step`` runs ``inner_steps`` of SGD on each episode's support *and* query images, from
    the current parameters, and writes ``theta - mean_episodes(theta_adapted)`` into the backbone's
    ``.grad`` (added to any gradient already there). The shared outer optimiser then applies it: with
    ``SGD(lr=eps)`` this is exactly Reptile with outer step size ``eps``. The head is rebuilt for each
    episode and is not meta-learnt. ``adapt`` fine-tunes on the support with the same inner loop, and
    ``episode_loss`` (validation) is the first-order MAML query loss.

    Args:
        backbone: ``(B, C, H, W) -> (B, D)`` encoder without running-statistics BatchNorm.
        inner_steps: SGD steps per episode during meta-training.
        test_inner_steps: Fine-tuning steps in eval mode; ``None`` means ``2 * inner_steps``.
        inner_lr: Inner SGD learning rate.
        head: ``"proto"`` or ``"zero"``.
    """

    first_order = True

    def __init__(
        self,
        backbone: nn.Module,
        *,
        inner_steps: int = 5,
        test_inner_steps: int | None = None,
        inner_lr: float = 0.01,
        head: str = "proto",
    ) -> None:
        super().__init__(
            backbone,
            inner_steps=inner_steps,
            test_inner_steps=test_inner_steps,
            inner_lr=inner_lr,
            head=head,
            inner_params="all",
        )

    def training_step(self, episodes: Sequence[Episode]) -> StepOutput:
        """Write the Reptile direction into ``.grad``.

        Returns:
            The query-part loss and accuracy of the inner loop's last step (logits of the partly
            adapted model on data it trains on: a training, not a validation, figure).
        """
        meta = dict(self.backbone.named_parameters())
        direction = {k: torch.zeros_like(v) for k, v in meta.items()}
        losses, accuracies = [], []
        for episode in episodes:
            images = torch.cat([episode.support_images, episode.query_images])
            labels = torch.cat([episode.support_labels, episode.query_labels])
            task = self.run_inner_loop(
                images, labels, episode.ways, steps=self.inner_steps, first_order=True, detach=True
            )
            for k, value in meta.items():
                direction[k] += (value.detach() - task.backbone[k]) / len(episodes)
            query_logits = task.logits[episode.support_labels.shape[0] :]
            losses.append(F.cross_entropy(query_logits, episode.query_labels))
            accuracies.append(accuracy(query_logits, episode.query_labels))
        for k, param in meta.items():
            param.grad = direction[k] if param.grad is None else param.grad + direction[k]
        return StepOutput(loss=torch.stack(losses).mean().cpu(), accuracy=torch.stack(accuracies).mean().cpu())

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor keyword arguments."""
        hp = super().hyperparameters()
        del hp["inner_params"]
        return hp
