"""Normalisation layers for backbones, chosen by name: ``"batch" | "group" | "instance" | "none"``.

Why ``"group"`` is every backbone's default:

* **Batch independence.** A clinician diagnoses one scan at a time, so a query's prediction must not
  depend on the other images of its batch. GroupNorm, InstanceNorm and no normalisation compute
  statistics per image, in train and eval mode alike. BatchNorm is batch-independent only in eval
  mode, with running statistics.
* **torch.func.** The MAML family runs the backbone through ``functional_call`` / ``vjp`` / ``vmap``.
  BatchNorm with running statistics updates its buffers in place, which ``vmap`` refuses and which
  leaks one task's statistics into the next; the usual workaround (``track_running_stats=False``)
  makes predictions batch-dependent. Per-image norms have no buffers and work under every transform.
  The gradient-based methods therefore refuse backbones holding running-statistics BatchNorm
  (:func:`running_stat_norms`).
* **Domain shift.** Running statistics estimated on the meta-training domains are wrong for a rare
  disease from another scanner; per-image statistics carry nothing from the source domain.

``"batch"`` stays available for metric methods (ProtoNet, MatchingNet, Baseline++) evaluated in eval
mode. ``"instance"`` normalises each channel of each image, removing its contrast and brightness,
which needs at least two spatial positions in every normalised map.
"""

from __future__ import annotations

from torch import nn

from medfew.models.checks import check_choice

NORMS: tuple[str, ...] = ("batch", "group", "instance", "none")


def check_norm(owner: str, norm: object) -> str:
    """Check that ``norm`` is one of :data:`NORMS` and return it."""
    return check_choice(owner, "norm", norm, NORMS)


def group_count(channels: int) -> int:
    """GroupNorm groups for ``channels``: 32 (Wu & He 2018) or the largest of 16, 8, 4, 2, 1 dividing it."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


def make_norm(norm: str, channels: int) -> nn.Module:
    """A 2-D normalisation layer over ``channels`` feature maps (``(B, C, H, W) -> (B, C, H, W)``)."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise AssertionError(f"unchecked norm {norm!r}")  # callers validate with check_norm first


def replace_batch_norms(module: nn.Module, norm: str) -> nn.Module:
    """Replace, in place, every ``BatchNorm2d`` inside ``module`` by ``make_norm(norm, channels)``.

    Used for third-party networks (MONAI) whose constructors do not pass the norm choice to every
    layer. Returns ``module``.
    """
    if norm == "batch":
        return module
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, make_norm(norm, child.num_features))
        else:
            replace_batch_norms(child, norm)
    return module


def running_stat_norms(module: nn.Module) -> list[str]:
    """Names of the batch-norm layers inside ``module`` that keep running statistics."""
    return [
        name
        for name, child in module.named_modules()
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and child.track_running_stats
    ]
