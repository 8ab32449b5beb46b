"""The one training loop: runs every method, writes its run directory, resumes exactly."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch

from medfew.config import TrainConfig
from medfew.data.episodes.pool import ImagePool
from medfew.data.episodes.sampler import EpisodeSampler
from medfew.data.preprocessing import Preprocessing, normalize_batch
from medfew.methods import build_method, list_methods
from medfew.models import build_backbone
from medfew.training.checkpoint import load_checkpoint
from medfew.training.loop import fit


def toy_pool(n_classes: int = 6, per_class: int = 12, size: int = 16, name: str = "toy") -> ImagePool:
    """Classes differ by which quadrant is bright, plus noise: learnable but not trivial."""
    g = torch.Generator().manual_seed(0)
    images, labels = [], []
    for c in range(n_classes):
        base = torch.zeros(1, size, size)
        r, q = divmod(c, 3)
        base[:, r * size // 2 : (r + 1) * size // 2, q * size // 3 : (q + 1) * size // 3] = 0.8
        for _ in range(per_class):
            images.append((base + 0.3 * torch.rand(1, size, size, generator=g)).clamp(0, 1))
            labels.append(c)
    return ImagePool(torch.stack(images), torch.tensor(labels), tuple(f"c{i}" for i in range(n_classes)), name)


def make_method(name: str, num_classes: int = 6):
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=16)
    extra = {"num_classes": num_classes} if name == "baseline" else {}
    return build_method(name, backbone, **extra), backbone


def settings(**overrides) -> TrainConfig:
    base = dict(steps=6, meta_batch=2, lr=1e-3, eval_every=3, eval_episodes=4, checkpoint_every=3, log_every=1,
                device="cpu", seed=0)
    base.update(overrides)
    return TrainConfig(**base)


def sampler(seed: int = 0) -> EpisodeSampler:
    return EpisodeSampler([toy_pool()], ways=3, shots=2, queries=3, seed=seed,
                          normalize=partial(normalize_batch, mode="zscore"))


def meta(backbone) -> dict:
    return dict(backbone="conv4", backbone_config=backbone.config(), preprocessing=Preprocessing(16, 1, "zscore"),
                class_pool=[f"toy/c{i}" for i in range(6)], config={"test": True})


def simple_validate(method) -> dict:
    s = sampler(seed=99)
    accs = []
    for e in s.episodes(4):
        with torch.no_grad():
            logits = method.adapt(e.support_images, e.support_labels).predict(e.query_images)
        accs.append(float((logits.argmax(-1) == e.query_labels).float().mean()))
    return {"accuracy_mean": sum(accs) / len(accs), "accuracy_ci95": 0.0}


@pytest.mark.parametrize("name", list_methods())
def test_every_method_trains_in_the_same_loop(name: str, tmp_path: Path) -> None:
    method, backbone = make_method(name)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    result = fit(method, sampler(), settings=settings(), run_dir=tmp_path, checkpoint_meta=meta(backbone),
                 validate=simple_validate, progress=False)
    assert result.steps_done == 6 and result.best_step in (3, 6)
    changed = [k for k, v in method.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "training changed no weight"
    published = json.loads((tmp_path / "published.json").read_text())
    assert published["last"] == "last-000006" and published["best"] == f"best-{result.best_step:06d}"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted(published.values())
    assert {p.name for p in (tmp_path / "checkpoints" / "last-000006").iterdir()} == {
        "model.safetensors", "model.json", "train_state.safetensors"}
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "val" in r] == [3, 6]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if "loss" in r)
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    loaded, info = load_checkpoint(tmp_path / "last.safetensors")
    assert info.method == name and info.preprocessing.image_size == 16
    for k, v in method.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.cpu())


@pytest.mark.parametrize("name", ["protonet", "maml", "reptile"])
def test_resume_after_a_stop_equals_an_uninterrupted_run(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    straight, backbone = make_method(name)
    init = {k: v.clone() for k, v in straight.state_dict().items()}
    fit(straight, sampler(), settings=settings(), run_dir=tmp_path / "a", checkpoint_meta=meta(backbone),
        validate=simple_validate, progress=False)

    first, backbone = make_method(name)
    first.load_state_dict(init)
    fit(first, sampler(), settings=settings(), run_dir=tmp_path / "b", checkpoint_meta=meta(backbone),
        validate=simple_validate, until_step=3, progress=False)
    resumed, backbone = make_method(name)  # a fresh process would start from new random weights
    result = fit(resumed, sampler(), settings=settings(), run_dir=tmp_path / "b", checkpoint_meta=meta(backbone),
                 validate=simple_validate, progress=False)
    assert result.steps_done == 6
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0, msg=f"{k} differs after resume")
    steps = [json.loads(l)["step"] for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines() if "loss" in l]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_a_run_of_another_method(tmp_path: Path) -> None:
    from medfew.errors import CheckpointError

    method, backbone = make_method("protonet")
    fit(method, sampler(), settings=settings(steps=2, checkpoint_every=1), run_dir=tmp_path,
        checkpoint_meta=meta(backbone), progress=False)
    other, backbone = make_method("matchingnet")
    with pytest.raises(CheckpointError, match="holds a 'protonet' run, cannot resume it as 'matchingnet'"):
        fit(other, sampler(), settings=settings(steps=2), run_dir=tmp_path, checkpoint_meta=meta(backbone),
            progress=False)


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    from medfew.errors import CheckpointError

    method, backbone = make_method("protonet")
    fit(method, sampler(), settings=settings(steps=2, checkpoint_every=1), run_dir=tmp_path,
        checkpoint_meta=meta(backbone), progress=False)
    changed = {**meta(backbone), "config": {"test": True, "train": {"lr": 0.1}}}
    again, backbone = make_method("protonet")
    with pytest.raises(CheckpointError, match=r"different config \(train: None -> \{'lr': 0.1\}\).*--restart"):
        fit(again, sampler(), settings=settings(steps=2), run_dir=tmp_path, checkpoint_meta=changed, progress=False)


def test_amp_resolves_per_device() -> None:
    from medfew.errors import ConfigError
    from medfew.training.device import resolve_amp

    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16  # asked for explicitly: the CPU gets it too
    cuda = torch.device("cuda")  # resolving needs no GPU
    assert resolve_amp("auto", cuda) is torch.bfloat16 and resolve_amp("bf16", cuda) is torch.bfloat16
    assert resolve_amp("off", cuda) is None
    with pytest.raises(ConfigError, match="amp must be 'auto', 'off' or 'bf16', got 'fp8'"):
        resolve_amp("fp8", cpu)


@pytest.mark.parametrize("name", ["protonet", "fomaml"])
def test_bf16_autocast_trains_on_the_cpu(name: str, tmp_path: Path) -> None:
    """``amp: bf16`` on the CPU: the step runs under bf16 autocast, the weights stay float32 and move."""
    method, backbone = make_method(name)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    seen: list[torch.dtype] = []
    backbone.blocks[0][0].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    result = fit(method, sampler(), settings=settings(amp="bf16", steps=3, eval_every=3, checkpoint_every=3),
                 run_dir=tmp_path, checkpoint_meta=meta(backbone), validate=simple_validate, progress=False)
    assert result.steps_done == 3
    assert torch.bfloat16 in seen  # the training convolutions ran in bf16
    assert all(v.dtype == before[k].dtype for k, v in method.state_dict().items())
    assert any(not torch.equal(v, before[k]) for k, v in method.state_dict().items())
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
