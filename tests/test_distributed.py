"""Data-parallel meta-training on two CPU processes (Gloo) equals one process on the same episodes.

Two processes are started with ``torch.multiprocessing`` (the fit-level test, with a resume in the
middle) and with ``torchrun --standalone`` (the ``medfew train`` command on real 28x28 data).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from medfew.config import TrainConfig
from medfew.data.episodes.pool import ImagePool
from medfew.data.episodes.sampler import EpisodeSampler
from medfew.data.preprocessing import Preprocessing, normalize_batch
from medfew.errors import ConfigError
from medfew.methods import build_method
from medfew.models import build_backbone
from medfew.training.checkpoint import resolve_checkpoint
from medfew.training.distributed import DistContext, context_from_env, shard
from medfew.training.loop import fit

METHODS = ("maml", "l2o", "reptile", "protonet")
WORLD = 2


def toy_pool() -> ImagePool:
    g = torch.Generator().manual_seed(0)
    images, labels = [], []
    for c in range(4):
        base = torch.zeros(1, 16, 16)
        base[:, (c // 2) * 8 : (c // 2 + 1) * 8, (c % 2) * 8 : (c % 2 + 1) * 8] = 0.8
        for _ in range(8):
            images.append((base + 0.3 * torch.rand(1, 16, 16, generator=g)).clamp(0, 1))
            labels.append(c)
    return ImagePool(torch.stack(images), torch.tensor(labels), tuple(f"c{i}" for i in range(4)), "toy")


def float64_zscore(x: torch.Tensor) -> torch.Tensor:
    return normalize_batch(x, mode="zscore").double()


def make_sampler(seed: int = 0) -> EpisodeSampler:
    return EpisodeSampler([toy_pool()], ways=3, shots=2, queries=2, seed=seed, normalize=float64_zscore)


def make_method(name: str):
    """A float64 model. The two runs add the same terms in another order; second-order MAML's
    trajectory amplifies that rounding fast (float32, lr 0.05: 1e-7 after 2 steps, 6e-4 after 6), so
    the comparison is made in float64 with a small outer step."""
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8)
    extra = {"inner_steps": 1, "inner_lr": 0.1} if name in ("maml", "l2o", "reptile") else {}
    return build_method(name, backbone, **extra).double(), backbone


def settings() -> TrainConfig:
    # SGD, not Adam: conv biases before GroupNorm have a zero gradient up to rounding noise, which Adam
    # rescales into full-size steps of random sign
    return TrainConfig(steps=6, meta_batch=4, optimizer="sgd", lr=0.01, eval_every=3, eval_episodes=2, checkpoint_every=3,
                       log_every=1, device="cpu", seed=0)


def meta(backbone) -> dict:
    return dict(backbone="conv4", backbone_config=backbone.config(), preprocessing=Preprocessing(16, 1, "zscore"),
                class_pool=[f"toy/c{i}" for i in range(4)], config={"test": True})


def validate(method) -> dict:
    accs = []
    for e in make_sampler(seed=99).episodes(2):
        with torch.no_grad():
            logits = method.adapt(e.support_images, e.support_labels).predict(e.query_images)
        accs.append(float((logits.argmax(-1) == e.query_labels).float().mean()))
    return {"accuracy_mean": sum(accs) / len(accs), "accuracy_ci95": 0.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, root: str) -> None:
    """One rank: for each method, train 3 steps, stop, resume from the run directory to step 6."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from medfew.training.distributed import init_distributed

    ctx = init_distributed(torch.device("cpu"))
    try:
        for name in METHODS:
            run = Path(root) / name / "run"
            torch.manual_seed(1000 + rank)  # every rank builds different weights: rank 0's must win
            method, backbone = make_method(name)
            if rank == 0:
                method.load_state_dict(load_file(str(Path(root) / name / "init.safetensors")))
            fit(method, make_sampler(), settings=settings(), run_dir=run, checkpoint_meta=meta(backbone),
                validate=validate, until_step=3, progress=False, dist_ctx=ctx)
            resumed, backbone = make_method(name)  # as a restarted process would
            result = fit(resumed, make_sampler(), settings=settings(), run_dir=run, checkpoint_meta=meta(backbone),
                         validate=validate, progress=False, dist_ctx=ctx)
            save_file({k: v.contiguous() for k, v in resumed.state_dict().items()},
                      str(Path(root) / name / f"rank{rank}.safetensors"))
            (Path(root) / name / f"rank{rank}.json").write_text(
                json.dumps({"best_metric": result.best_metric, "best_step": result.best_step,
                            "last_train": result.last_train}))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    for name in METHODS:
        (root / name).mkdir()
        torch.manual_seed(0)
        method, backbone = make_method(name)
        save_file({k: v.contiguous() for k, v in method.state_dict().items()}, str(root / name / "init.safetensors"))
        single, _ = make_method(name)
        single.load_state_dict(method.state_dict())
        fit(single, make_sampler(), settings=settings(), run_dir=root / name / "single",
            checkpoint_meta=meta(backbone), validate=validate, progress=False)
        save_file({k: v.contiguous() for k, v in single.state_dict().items()}, str(root / name / "single.safetensors"))
    mp.start_processes(_worker, args=(free_port(), str(root)), nprocs=WORLD, join=True, start_method="spawn")
    return root


@pytest.mark.parametrize("name", METHODS)
def test_two_gloo_processes_with_a_resume_reach_the_single_process_weights(two_process_runs: Path, name: str) -> None:
    single = load_file(str(two_process_runs / name / "single.safetensors"))
    for rank in range(WORLD):
        weights = load_file(str(two_process_runs / name / f"rank{rank}.safetensors"))
        assert weights.keys() == single.keys()
        for k, v in single.items():
            # the same sums in another order (an all-reduce of two halves): float64 rounding, amplified by
            # six steps of training (measured up to 1.4e-8 absolute); a wrong share or weighting moves 1e-3
            torch.testing.assert_close(weights[k], v, atol=1e-7, rtol=1e-6, msg=lambda m, k=k: f"rank {rank} {k}: {m}")
    init = load_file(str(two_process_runs / name / "init.safetensors"))
    assert any(not torch.equal(init[k], single[k]) for k in single), "training changed nothing"


@pytest.mark.parametrize("name", METHODS)
def test_rank_zero_alone_writes_the_run_directory(two_process_runs: Path, name: str) -> None:
    run, single = two_process_runs / name / "run", two_process_runs / name / "single"
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in single.iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]  # one writer, no duplicates
    assert [r["step"] for r in records if "val" in r] == [3, 6]
    reference = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    for got, want in zip(records, reference):
        if "loss" in want:  # logged figures are meta-batch means over both ranks
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)
            assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-6)
    summaries = [json.loads((two_process_runs / name / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert summaries[0] == summaries[1]  # rank 0's best validation and the reduced figures reach rank 1
    assert summaries[0]["best_step"] in (3, 6)


def test_shard_splits_every_meta_batch_exactly_once() -> None:
    for meta_batch, world in [(4, 2), (5, 2), (7, 3), (3, 3)]:
        parts = [list(shard(meta_batch, DistContext(rank=r, world_size=world))) for r in range(world)]
        assert sum(parts, []) == list(range(meta_batch))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ConfigError, match=r"train.meta_batch=2 is smaller than the 3 processes"):
        shard(2, DistContext(rank=0, world_size=3))


def test_context_is_read_from_the_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert context_from_env() == DistContext() and context_from_env().is_main
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = context_from_env()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.enabled, ctx.is_main) == (3, 4, 1, True, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match=r"bad torchrun environment: RANK=4, WORLD_SIZE=4"):
        context_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE must be an integer, got 'two'"):
        context_from_env()


CLI_CONFIG = """
data: {train: [pneumoniamnist], val: [breastmnist], test: [breastmnist], channels: 1, augment: none}
episode: {ways: 2, shots: 1, queries: 2}
backbone: {name: conv4, hidden: 8}
method: {name: fomaml, inner_steps: 1}
train: {steps: 4, meta_batch: 2, optimizer: sgd, lr: 0.05, eval_every: 2, eval_episodes: 2, checkpoint_every: 2, log_every: 1, device: cpu}
"""


def test_torchrun_medfew_train_matches_one_process(data_root: Path, tmp_path: Path) -> None:
    from medfew.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(CLI_CONFIG)
    env = {**os.environ, "MEDFEW_DATA_ROOT": str(data_root), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
         "-m", "medfew", "train", "--config", str(config), "--out", str(tmp_path / "ddp"), "--quiet"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"run_dir"') == 1  # rank 0 alone prints the summary
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "one"), "--quiet",
                 "--data-root", str(data_root)]) == 0
    ddp, one = (load_file(str(resolve_checkpoint(tmp_path / run / "last.safetensors"))) for run in ("ddp", "one"))
    for k, v in one.items():
        torch.testing.assert_close(ddp[k], v, atol=1e-6, rtol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    steps = [json.loads(line)["step"] for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 2, 3, 4, 4]  # train 1, 2, val 2, train 3, 4, val 4: written once
