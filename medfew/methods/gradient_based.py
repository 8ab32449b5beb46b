"""Shared machinery of the gradient-based methods (MAML family, Reptile): a linear head fitted by
the functional inner loop of :mod:`medfew.methods.inner_loop`.

Backbones with running-statistics BatchNorm are refused: ``functional_call`` would update those
buffers in place on every inner step (and ``vmap`` refuses it), and switching them off makes
predictions depend on the batch. Per-image norms (``norm="group"``, the backbone default) work under
every ``torch.func`` transform and keep a query's prediction independent of its batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from medfew.data.episode import Episode
from medfew.errors import ConfigError
from medfew.methods.base import AdaptedModel, FewShotMethod, support_classes
from medfew.methods.functional import linear_logits
from medfew.methods.inner_loop import (
    HEAD_BIAS,
    HEAD_INITS,
    HEAD_WEIGHT,
    Params,
    TaskParams,
    adapt_task,
    gradients_enabled,
)
from medfew.models.checks import check_choice, check_int, check_positive
from medfew.models.norm import running_stat_norms

INNER_PARAMS: tuple[str, ...] = ("all", "head")


class FunctionalClassifier(AdaptedModel):
    """A backbone run with adapted parameters (``functional_call``) followed by a linear head.

    Attributes:
        task: The adapted :class:`~medfew.methods.inner_loop.TaskParams` (detached at test time).
    """

    def __init__(self, backbone: nn.Module, task: TaskParams, buffers: Params) -> None:
        self.backbone = backbone
        self.task = task
        self.buffers = buffers
        self.n_classes = int(task.head_weight.shape[0])

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, D)`` features under the adapted backbone parameters."""
        return functional_call(self.backbone, {**self.task.backbone, **self.buffers}, (images,))

    def predict(self, query_images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W) -> (M, N)`` logits."""
        return linear_logits(self.embed(query_images), self.task.head_weight, self.task.head_bias)


class GradientBasedMethod(FewShotMethod):
    """Base of MAML and Reptile: inner-loop settings, test-time adaptation and the query loss.

    The number of inner steps is ``inner_steps`` in train mode and ``test_inner_steps`` in eval mode,
    for ``adapt`` and ``episode_loss`` alike. ``adapt`` always runs a first-order loop on detached
    parameters (no meta-gradient is needed at test time) and works under ``torch.no_grad()``.

    Args:
        backbone: ``(B, C, H, W) -> (B, D)`` encoder without running-statistics BatchNorm.
        inner_steps: Inner steps during meta-training.
        test_inner_steps: Inner steps in eval mode; ``None`` means ``2 * inner_steps``.
        inner_lr: Inner-loop SGD learning rate (the initial one for Meta-SGD).
        head: Head initialisation, ``"proto"`` (Proto-MAML) or ``"zero"``; both work for any ``N``.
        inner_params: Adapt ``"all"`` parameters in the inner loop, or the ``"head"`` only.
    """

    first_order: bool = True

    def __init__(
        self,
        backbone: nn.Module,
        *,
        inner_steps: int,
        test_inner_steps: int | None,
        inner_lr: float,
        head: str,
        inner_params: str,
    ) -> None:
        super().__init__(backbone)
        self.inner_steps = check_int(self.name, "inner_steps", inner_steps, 0)
        if test_inner_steps is None:
            test_inner_steps = 2 * inner_steps
        self.test_inner_steps = check_int(self.name, "test_inner_steps", test_inner_steps, 0)
        self.inner_lr = check_positive(self.name, "inner_lr", inner_lr)
        self.head = check_choice(self.name, "head", head, HEAD_INITS)
        self.inner_params = check_choice(self.name, "inner_params", inner_params, INNER_PARAMS)
        stats = running_stat_norms(backbone)
        if stats:
            raise ConfigError(
                f"{self.name}: the backbone has BatchNorm with running statistics ({stats[0]!r}"
                f"{f' and {len(stats) - 1} more' if len(stats) > 1 else ''}), which the functional inner loop "
                f"cannot use; build the backbone with norm='group' (or 'instance' / 'none')"
            )

    @property
    def steps(self) -> int:
        """Inner steps for the current mode (``inner_steps`` when training, else ``test_inner_steps``)."""
        return self.inner_steps if self.training else self.test_inner_steps

    def inner_lrs(self) -> dict[str, float | torch.Tensor]:
        """Learning rate of every adapted tensor, by the names :func:`adapt_task` uses."""
        return dict.fromkeys(self.adapted_names(), self.inner_lr)

    def adapted_names(self) -> list[str]:
        """Names of the tensors the inner loop adapts (backbone parameters, then the head)."""
        backbone = [k for k, _ in self.backbone.named_parameters()] if self.inner_params == "all" else []
        return [*backbone, HEAD_WEIGHT, HEAD_BIAS]

    def run_inner_loop(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        n_classes: int,
        *,
        steps: int,
        first_order: bool,
        detach: bool,
    ) -> TaskParams:
        """Adapt to ``(images, labels)`` from the current meta-parameters.

        Args:
            images: ``(S, C, H, W)`` inner data.
            labels: ``(S,)`` int64 in ``[0, N)``.
            n_classes: ``N``.
            steps: Inner steps.
            first_order: Detach inner gradients.
            detach: Start from detached meta-parameters and return detached results (test time,
                Reptile); otherwise the result is differentiable with respect to them.
        """
        params: Params = dict(self.backbone.named_parameters())
        buffers: Params = dict(self.backbone.named_buffers())
        lrs = self.inner_lrs()
        if detach:
            params = {k: v.detach() for k, v in params.items()}
            lrs = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in lrs.items()}
        with gradients_enabled():
            if images.is_inference() or labels.is_inference():
                images, labels = images.clone(), labels.clone()
            task = adapt_task(
                self.backbone,
                params,
                buffers,
                images,
                labels,
                n_classes,
                steps=steps,
                lrs=lrs,
                first_order=first_order or detach,
                head_init=self.head,
                adapt_backbone=self.inner_params == "all",
            )
        if detach:
            task = TaskParams(
                {k: v.detach() for k, v in task.backbone.items()},
                task.head_weight.detach(),
                task.head_bias.detach(),
                task.loss.detach(),
                task.logits.detach(),
            )
        return task

    def adapt(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> FunctionalClassifier:
        """Fine-tune a copy of the parameters on the support set (``self.steps`` first-order steps)."""
        n_classes = support_classes(support_images, support_labels)
        task = self.run_inner_loop(
            support_images, support_labels, n_classes, steps=self.steps, first_order=True, detach=True
        )
        return FunctionalClassifier(self.backbone, task, dict(self.backbone.named_buffers()))

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Query cross-entropy after the inner loop, differentiable with respect to the meta-parameters."""
        task = self.run_inner_loop(
            episode.support_images,
            episode.support_labels,
            episode.ways,
            steps=self.steps,
            first_order=self.first_order,
            detach=False,
        )
        logits = FunctionalClassifier(self.backbone, task, dict(self.backbone.named_buffers())).predict(
            episode.query_images
        )
        return F.cross_entropy(logits, episode.query_labels), logits

    def hyperparameters(self) -> dict[str, Any]:
        """The inner-loop settings shared by the family."""
        return {
            "inner_steps": self.inner_steps,
            "test_inner_steps": self.test_inner_steps,
            "inner_lr": self.inner_lr,
            "head": self.head,
            "inner_params": self.inner_params,
        }
