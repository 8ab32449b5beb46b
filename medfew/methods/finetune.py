"""Test-time fine-tuning on the support set, for every embedding method (ProtoNet, MatchingNet, Baseline++).

The cross-domain few-shot recipe (BSCD-FSL, Guo et al. 2020; P>M>F, Hu et al. 2022): keep the
meta-trained encoder, put a linear head on its (transformed) features **initialised from the class
prototypes** (``W = 2 s P``, ``b = -s ||P||^2``, i.e. exactly the scaled prototype classifier), then
take a few full-batch Adam steps of cross-entropy on the support set, with horizontally flipped copies
of the support scans as augmentation. ``depth > 0`` also fine-tunes the backbone's top ``depth``
blocks (on a private copy: the meta-trained weights are never touched).

With ``depth == 0`` the features are computed once, so fine-tuning costs milliseconds and the
leave-one-out folds of a support set (conformal scores) are cheap; see
:meth:`medfew.methods.protonet.ProtoNet.leave_one_out_logits`.

Steps, learning rate and depth are chosen on the meta-train domains' val episodes
(``medfew calibrate``) and stored in the checkpoint's method hyperparameters.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfew.errors import ConfigError
from medfew.methods.base import support_classes
from medfew.methods.functional import linear_logits, proto_head, transform_features
from medfew.methods.heads import LinearHeadClassifier
from medfew.methods.inner_loop import gradients_enabled
from medfew.models.checks import check_bool, check_int, check_positive

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def adam_steps(
    loss_fn: Callable[[list[torch.Tensor]], torch.Tensor], start: list[torch.Tensor], *, steps: int, lr: float
) -> list[torch.Tensor]:
    """Minimise ``loss_fn`` over a list of tensors by full-batch Adam (Kingma & Ba 2015, bias-corrected).

    Written out rather than using ``torch.optim.Adam``, whose first construction imports
    ``torch._dynamo`` (seconds, once per process) - too slow for a clinician's first adaptation.

    Args:
        loss_fn: Maps the list of tensors to a scalar loss.
        start: Initial values (any shapes); not modified.
        steps: Adam steps (0 returns detached copies of ``start``).
        lr: Learning rate.

    Returns:
        The detached optimised tensors, shaped like ``start``.
    """
    values = [t.detach().clone() for t in start]
    first = [torch.zeros_like(v) for v in values]
    second = [torch.zeros_like(v) for v in values]
    beta1, beta2 = ADAM_BETAS
    with gradients_enabled():
        for step in range(1, steps + 1):
            leaves = [v.requires_grad_() for v in values]
            grads = torch.autograd.grad(loss_fn(leaves), leaves)
            updated = []
            for i, (leaf, grad) in enumerate(zip(leaves, grads)):
                first[i] = beta1 * first[i] + (1 - beta1) * grad
                second[i] = beta2 * second[i] + (1 - beta2) * grad.square()
                update = (first[i] / (1 - beta1**step)) / ((second[i] / (1 - beta2**step)).sqrt() + ADAM_EPS)
                updated.append((leaf - lr * update).detach())
            values = updated
    return values


@dataclass(frozen=True)
class FineTuneSettings:
    """How a linear head (and optionally the top blocks) is fine-tuned on a support set.

    Attributes:
        steps: Full-batch Adam steps (0: the prototype classifier itself).
        lr: Adam learning rate.
        depth: Top backbone blocks fine-tuned with the head (0: head only, on fixed features).
        flip: Add horizontally flipped support scans as training points.
        scale: Logit scale ``s`` of the prototype initialisation.
    """

    steps: int = 50
    lr: float = 0.01
    depth: int = 0
    flip: bool = True
    scale: float = 10.0

    @classmethod
    def checked(cls, owner: str, *, steps: int, lr: float, depth: int, flip: bool, scale: float) -> FineTuneSettings:
        """Validated settings; ``owner`` names the method in error messages.

        Raises:
            ConfigError: Naming the bad key and value.
        """
        return cls(
            steps=check_int(owner, "finetune_steps", steps, 0),
            lr=check_positive(owner, "finetune_lr", lr),
            depth=check_int(owner, "finetune_depth", depth, 0),
            flip=check_bool(owner, "finetune_flip", flip),
            scale=check_positive(owner, "finetune_scale", scale),
        )

    def hyperparameters(self) -> dict[str, Any]:
        """The method keyword arguments that rebuild these settings."""
        return {
            "finetune_steps": self.steps,
            "finetune_lr": self.lr,
            "finetune_depth": self.depth,
            "finetune_flip": self.flip,
            "finetune_scale": self.scale,
        }


def packed_head(weight: torch.Tensor, bias: torch.Tensor, scale: float) -> torch.Tensor:
    """``(..., N, D)`` weights and ``(..., N)`` biases scaled by ``scale`` and packed as ``(..., N, D + 1)``."""
    return torch.cat([scale * weight, scale * bias.unsqueeze(-1)], dim=-1)


def support_features(
    backbone: nn.Module, images: torch.Tensor, flip: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(S, C, H, W)`` -> raw features ``(S, D)`` and, for ``flip``, those of the mirrored images (else ``None``)."""
    with torch.no_grad():
        return backbone(images), backbone(flipped(images)) if flip else None


def finetune_head(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, settings: FineTuneSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit a linear head on fixed support features, starting from the scaled prototype classifier.

    Args:
        features: ``(S, D)`` (transformed) support features, flipped copies included.
        labels: ``(S,)`` int64 in ``[0, N)``; every class present.
        n_classes: ``N``.
        settings: Steps, learning rate and scale.

    Returns:
        ``W`` ``(N, D)`` and ``b`` ``(N,)``, detached.
    """
    features, labels = features.detach().clone(), labels.detach().clone()
    start = packed_head(*proto_head(features, labels, n_classes), settings.scale)

    def loss(params: list[torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(linear_logits(features, params[0][:, :-1], params[0][:, -1]), labels)

    (head,) = adam_steps(loss, [start], steps=settings.steps, lr=settings.lr)
    return head[:, :-1].contiguous(), head[:, -1].contiguous()


def flipped(images: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` images mirrored left-right (the support augmentation)."""
    return images.flip(-1)


def finetune_blocks(
    backbone: nn.Module,
    support_images: torch.Tensor,
    support_labels: torch.Tensor,
    n_classes: int,
    settings: FineTuneSettings,
    feature_transform: str,
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Fine-tune a private copy of the backbone's top ``settings.depth`` blocks jointly with the head.

    The backbone must offer ``finetune_modules(depth) -> list[nn.Module]`` (its top blocks).

    Args:
        backbone: The meta-trained encoder (not modified).
        support_images: ``(S, C, H, W)``.
        support_labels: ``(S,)`` int64 in ``[0, N)``.
        n_classes: ``N``.
        settings: Steps, learning rate, depth, flip and scale.
        feature_transform: ``"none" | "l2" | "cl2"`` applied to the features before the head.

    Returns:
        ``(tuned backbone copy, W (N, D), b (N,), centre (D,) or None)``.

    Raises:
        ConfigError: The backbone cannot fine-tune its top blocks.
    """
    top = getattr(backbone, "finetune_modules", None)
    if top is None:
        raise ConfigError(
            f"finetune_depth={settings.depth} needs a backbone with finetune_modules(depth); "
            f"{type(backbone).__name__} has none (use finetune_depth=0)"
        )
    tuned = copy.deepcopy(backbone).eval()
    for parameter in tuned.parameters():
        parameter.requires_grad_(False)
    blocks = [p for module in tuned.finetune_modules(settings.depth) for p in module.parameters()]
    images = torch.cat([support_images, flipped(support_images)]) if settings.flip else support_images
    labels = torch.cat([support_labels, support_labels]) if settings.flip else support_labels
    with torch.no_grad():
        raw = tuned(images)  # the support first, then its flipped copies
        centre = raw[: len(support_labels)].mean(0) if feature_transform == "cl2" else None
        head = packed_head(*proto_head(transform_features(raw, feature_transform, centre), labels, n_classes),
                           settings.scale)

    def loss(params: list[torch.Tensor]) -> torch.Tensor:
        feats = transform_features(_forward_with(tuned, blocks, params[1:], images), feature_transform, centre)
        return F.cross_entropy(linear_logits(feats, params[0][:, :-1], params[0][:, -1]), labels)

    result = adam_steps(loss, [head, *blocks], steps=settings.steps, lr=settings.lr)
    with torch.no_grad():
        for target, value in zip(blocks, result[1:]):
            target.copy_(value)
        if feature_transform == "cl2":
            centre = tuned(support_images).mean(0)
    return tuned, result[0][:, :-1].contiguous(), result[0][:, -1].contiguous(), centre


def _forward_with(
    module: nn.Module, targets: list[torch.Tensor], values: list[torch.Tensor], images: torch.Tensor
) -> torch.Tensor:
    """Run ``module`` on ``images`` with the parameters ``targets`` replaced by ``values`` (differentiably)."""
    names = {id(p): name for name, p in module.named_parameters()}
    overrides = {names[id(t)]: v for t, v in zip(targets, values)}
    return torch.func.functional_call(module, overrides, (images,))


def finetune_heads_leave_one_out(
    raw: torch.Tensor,
    mirrored: torch.Tensor | None,
    labels: torch.Tensor,
    n_classes: int,
    settings: FineTuneSettings,
    feature_transform: str,
) -> torch.Tensor:
    """Fine-tune the ``S`` leave-one-out heads of a support set at once; score each left-out scan.

    Fold ``i`` is :func:`head_on_features` on every support scan but ``i`` (its own ``cl2`` centre,
    prototype start and loss). The folds are stacked into one ``(S, N, D + 1)`` tensor and their losses
    summed: Adam is elementwise, so each fold follows exactly its own optimisation path.

    Args:
        raw: ``(S, D)`` support features.
        mirrored: ``(S, D)`` features of the flipped scans, or ``None``.
        labels: ``(S,)`` int64 in ``[0, N)``; every class has at least 2 scans.
        n_classes: ``N``.
        settings: Steps, learning rate, scale (``depth`` must be 0).
        feature_transform: ``"none" | "l2" | "cl2"``.

    Returns:
        ``(S, N)`` logits of each scan under the head fitted without it, detached.
    """
    s = raw.shape[0]
    keep = 1.0 - torch.eye(s, dtype=raw.dtype, device=raw.device)  # (S folds, S scans)
    centres = (keep @ raw) / keep.sum(1, keepdim=True) if feature_transform == "cl2" else None

    def per_fold(features: torch.Tensor) -> torch.Tensor:  # (S, D) -> (S folds, S scans, D)
        stacked = features.unsqueeze(0).expand(s, -1, -1)
        if centres is None:
            return transform_features(stacked, feature_transform) if feature_transform != "none" else stacked
        return transform_features(stacked - centres.unsqueeze(1), "l2")

    features, weights, targets = per_fold(raw), keep, labels
    if mirrored is not None:
        features = torch.cat([features, per_fold(mirrored)], dim=1)
        weights, targets = torch.cat([keep, keep], dim=1), torch.cat([labels, labels])
    one_hot = F.one_hot(targets, n_classes).to(raw.dtype)  # (T, N)
    member = weights.unsqueeze(2) * one_hot.unsqueeze(0)  # (S, T, N)
    protos = member.transpose(1, 2) @ features / member.sum(1).unsqueeze(2)  # (S, N, D)
    start = packed_head(2 * protos, -protos.pow(2).sum(-1), settings.scale)  # the Proto-MAML head of each fold
    features, weights, targets = features.detach(), weights.detach(), targets.detach()

    def loss(params: list[torch.Tensor]) -> torch.Tensor:
        head = params[0]
        logits = features @ head[:, :, :-1].transpose(1, 2) + head[:, :, -1].unsqueeze(1)  # (S, T, N)
        nll = F.cross_entropy(logits.transpose(1, 2), targets.expand(s, -1), reduction="none")  # (S, T)
        return ((nll * weights).sum(1) / weights.sum(1)).sum()

    (head,) = adam_steps(loss, [start], steps=settings.steps, lr=settings.lr)
    own = features[torch.arange(s), torch.arange(s)]  # (S, D): each scan in its own fold's space
    return (torch.einsum("sd,snd->sn", own, head[:, :, :-1]) + head[:, :, -1]).detach()


def head_on_features(
    backbone: nn.Module,
    raw: torch.Tensor,
    mirrored: torch.Tensor | None,
    labels: torch.Tensor,
    n_classes: int,
    settings: FineTuneSettings,
    feature_transform: str,
) -> LinearHeadClassifier:
    """A fine-tuned linear head on fixed support features.

    Args:
        backbone: The encoder the classifier will embed queries with.
        raw: ``(S, D)`` support features ``f(x)``.
        mirrored: ``(S, D)`` features of the flipped support scans, or ``None``.
        labels: ``(S,)`` int64 in ``[0, N)``.
        n_classes: ``N``.
        settings: Steps, learning rate, scale.
        feature_transform: ``"none" | "l2" | "cl2"`` (``"cl2"`` centres on the mean of ``raw``).
    """
    centre = raw.mean(0) if feature_transform == "cl2" else None
    features = transform_features(raw, feature_transform, centre)
    if mirrored is not None:
        features = torch.cat([features, transform_features(mirrored, feature_transform, centre)])
        labels = torch.cat([labels, labels])
    weight, bias = finetune_head(features, labels, n_classes, settings)
    return LinearHeadClassifier(backbone, weight, bias, feature_transform, centre)


def finetuned_classifier(
    backbone: nn.Module,
    support_images: torch.Tensor,
    support_labels: torch.Tensor,
    settings: FineTuneSettings,
    feature_transform: str,
) -> LinearHeadClassifier:
    """Fine-tune a linear head (and, for ``settings.depth > 0``, the top blocks) on a support set.

    Args:
        backbone: The meta-trained encoder (never modified).
        support_images: ``(S, C, H, W)``.
        support_labels: ``(S,)`` int64 in ``[0, N)``.
        settings: Steps, learning rate, depth, flip and scale.
        feature_transform: ``"none" | "l2" | "cl2"``.

    Returns:
        The classifier; its ``backbone`` is a tuned private copy when ``depth > 0``.
    """
    n_classes = support_classes(support_images, support_labels)
    if settings.depth > 0:
        tuned, weight, bias, centre = finetune_blocks(
            backbone, support_images, support_labels, n_classes, settings, feature_transform
        )
        return LinearHeadClassifier(tuned, weight, bias, feature_transform, centre)
    raw, mirrored = support_features(backbone, support_images, settings.flip)
    return head_on_features(backbone, raw, mirrored, support_labels, n_classes, settings, feature_transform)


class FineTunableHead:
    """Mixin giving an embedding method a ``head`` option, ``"finetune"`` among its choices.

    The method calls :meth:`_setup_head` in ``__init__`` with its own read-outs; ``head="finetune"``
    makes ``adapt`` return :func:`finetuned_classifier`. Meta-training never uses it (``episode_loss``
    keeps the method's own read-out), so it is a test-time option for any trained checkpoint.
    """

    name: str
    backbone: nn.Module
    head: str
    finetune: FineTuneSettings

    def _setup_head(
        self, head: str, choices: tuple[str, ...], *, steps: int, lr: float, depth: int, flip: bool, scale: float
    ) -> None:
        from medfew.models.checks import check_choice

        self.head = check_choice(self.name, "head", head, choices)
        self.finetune = FineTuneSettings.checked(self.name, steps=steps, lr=lr, depth=depth, flip=flip, scale=scale)

    @property
    def reads_fixed_features(self) -> bool:
        """True unless the top backbone blocks are fine-tuned at test time."""
        return not (self.head == "finetune" and self.finetune.depth > 0)

    def leave_one_out_logits(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> torch.Tensor:
        """Leave-one-out logits; for the head-only ``"finetune"`` read-out all folds train at once
        (:func:`finetune_heads_leave_one_out`), else the method's own (or the default loop)."""
        if self.head != "finetune" or self.finetune.depth > 0:
            return super().leave_one_out_logits(support_images, support_labels)  # type: ignore[misc]
        from medfew.methods.base import check_leave_one_out

        n_classes = support_classes(support_images, support_labels)
        check_leave_one_out(support_labels, n_classes)
        raw, mirrored = support_features(self.backbone, support_images, self.finetune.flip)
        transform = getattr(self, "feature_transform", "l2")
        return finetune_heads_leave_one_out(raw, mirrored, support_labels, n_classes, self.finetune, transform)

    def _head_hyperparameters(self) -> dict[str, Any]:
        return {"head": self.head, **self.finetune.hyperparameters()}
