"""The GPU path: CUDA-only checks (marker ``gpu``; skipped without a CUDA device) and the CPU-side
validation of its options.

Run the CUDA ones with ``pytest -m gpu tests/test_gpu.py`` or ``benchmarks/gpu.sh``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medfew.config import TrainConfig
from medfew.data.episodes.pool import ImagePool
from medfew.data.episodes.sampler import EpisodeSampler
from medfew.data.episodes.transforms import build_augmentation
from medfew.data.preprocessing import Preprocessing, normalize_batch
from medfew.errors import ConfigError, EpisodeError
from medfew.methods import build_method
from medfew.models import build_backbone
from medfew.training.checkpoint import resolve_checkpoint
from medfew.training.device import episodes_on_device, move_episode
from medfew.training.loop import fit

gpu = pytest.mark.gpu


def pool(n_classes: int = 5, per_class: int = 20, size: int = 28) -> ImagePool:
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n_classes * per_class, 3, size, size, generator=g) * 255).to(torch.uint8)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return ImagePool(images, labels, tuple(f"c{i}" for i in range(n_classes)), "toy")


def sampler(**kwargs) -> EpisodeSampler:
    return EpisodeSampler([pool()], ways=5, shots=2, queries=3, seed=0, normalize=normalize_batch, **kwargs)


def method(name: str, **hp):
    backbone = build_backbone("conv4", in_channels=3, image_size=28, hidden=16)
    extra = {"inner_steps": 2} if name in ("maml", "fomaml", "metasgd", "reptile") else {}
    return build_method(name, backbone, **extra, **hp).cuda().train()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_pinned_episodes_need_cuda() -> None:
    with pytest.raises(EpisodeError, match="pin_memory=True needs CUDA"):
        sampler(pin_memory=True)


def test_episodes_on_device_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="episodes_on_device must be 'auto', 'on' or 'off', got 'yes'"):
        episodes_on_device("yes", [pool()], torch.device("cpu"))
    with pytest.raises(ConfigError, match="'on' needs a CUDA training device, got cpu"):
        episodes_on_device("on", [pool()], torch.device("cpu"))
    assert not episodes_on_device("auto", [pool()], torch.device("cpu"))


def test_moving_an_episode_keeps_its_values_and_layout_option() -> None:
    e = sampler().sample(0)
    moved = move_episode(e, torch.device("cpu"), channels_last=True)
    assert moved.support_images.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(moved.support_images, e.support_images)
    assert torch.equal(moved.query_labels, e.query_labels) and moved.class_names == e.class_names


@gpu
def test_episodes_built_on_the_device_equal_the_cpu_ones() -> None:
    cpu, gpu = sampler(), sampler(device="cuda")
    for index in range(3):
        a, b = cpu.sample(index), gpu.sample(index)
        assert b.support_images.is_cuda and not b.support_labels.is_cuda  # labels validated on the host
        torch.testing.assert_close(b.support_images.cpu(), a.support_images)
        assert torch.equal(a.query_labels, b.query_labels)


@gpu
def test_augmentation_runs_on_device_episodes() -> None:
    s = sampler(device="cuda", augment=build_augmentation("standard", seed=0))
    e = s.sample(0)
    assert e.query_images.is_cuda and torch.isfinite(e.query_images).all()


@gpu
def test_pinned_episodes_move_without_blocking() -> None:
    e = sampler(pin_memory=True).sample(0)
    assert e.support_images.is_pinned() and e.query_labels.is_pinned()
    moved = move_episode(e, torch.device("cuda"), channels_last=True)
    assert moved.support_images.is_cuda and moved.query_labels.is_cuda
    assert moved.support_images.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(moved.query_images.cpu(), e.query_images)


@gpu
def test_episodes_on_device_auto_when_the_pool_fits() -> None:
    assert episodes_on_device("auto", [pool()], torch.device("cuda"))
    assert not episodes_on_device("off", [pool()], torch.device("cuda"))


@gpu
@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "reptile", "protonet"])
def test_a_training_step_never_syncs_with_the_host(name: str) -> None:
    """``torch.cuda.set_sync_debug_mode("error")`` raises on any synchronising call inside the step."""
    m = method(name)
    optimizer = torch.optim.Adam(m.parameters(), lr=1e-3)
    s = sampler(device="cuda")
    params = [p for p in m.parameters() if p.requires_grad]
    batches = [[move_episode(s.sample(4 * step + b), torch.device("cuda")) for b in range(4)] for step in range(3)]
    m.training_step(batches[0])  # warm-up: lazy CUDA initialisation may sync once
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[1:]:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = m.training_step(batch)
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.loss).item()


@gpu
@pytest.mark.parametrize("name", ["maml", "metasgd"])
def test_vectorised_meta_gradients_equal_the_loop_on_cuda(name: str) -> None:
    fast, slow = method(name, vectorize=True), method(name, vectorize=False)
    slow.load_state_dict(fast.state_dict())
    s = sampler(device="cuda")
    batch = [move_episode(s.sample(b), torch.device("cuda")) for b in range(4)]
    grads = []
    for m in (fast, slow):
        m.zero_grad(set_to_none=True)
        m.training_step(batch)
        grads.append({k: p.grad for k, p in m.named_parameters() if p.grad is not None})
    scale = max(float(g.abs().max()) for g in grads[1].values())
    for k in grads[1]:
        # TF32 convolutions on recent GPUs round more than float32 on the CPU
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-3 * scale, rtol=1e-3)


@gpu
def test_fit_on_cuda_with_device_episodes_and_channels_last(tmp_path: Path) -> None:
    m = method("maml")
    backbone = m.backbone
    settings = TrainConfig(steps=4, meta_batch=2, eval_every=2, eval_episodes=2, checkpoint_every=2, log_every=1,
                           device="cuda", amp="bf16")
    meta = dict(backbone="conv4", backbone_config=backbone.config(), preprocessing=Preprocessing(28, 3, "zscore"),
                class_pool=[f"toy/c{i}" for i in range(5)], config={})
    result = fit(m, sampler(device="cuda"), settings=settings, run_dir=tmp_path, checkpoint_meta=meta,
                 progress=False, channels_last=True)
    assert result.steps_done == 4 and resolve_checkpoint(tmp_path / "last.safetensors").is_file()
    assert all(torch.isfinite(torch.tensor(v)) for v in result.last_train.values())
