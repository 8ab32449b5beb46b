"""Crash-safe checkpoints: a training process killed at any write boundary resumes bit for bit.

The writer's test-only hook ``MEDFEW_TEST_KILL_AT=<boundary>`` SIGKILLs a real training process at
that boundary; the rerun (without the hook) must end with exactly the weights and the log of a run
that was never interrupted, and leave no temporary behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_training import make_method, meta, sampler, settings, simple_validate

from medfew.errors import CheckpointError
from medfew.training.checkpoint import (
    NonFiniteWeightsError,
    load_checkpoint,
    read_checkpoint_info,
    resolve_checkpoint,
    update_sidecar,
)
from medfew.training.loop import fit
from medfew.training.run_store import (
    BOUNDARIES,
    KILL_ENV,
    POINTER,
    clean_stale,
    read_pointer,
)
from medfew.training.state_io import load_state, save_state

TESTS = Path(__file__).resolve().parent

# a fit on the toy pool of test_training, as a separate process that the hook can kill
FIT_SCRIPT = """
import sys, torch
from medfew.training.loop import fit
from test_training import make_method, meta, sampler, settings, simple_validate
torch.manual_seed(0)
method, backbone = make_method("protonet")
fit(method, sampler(), settings=settings(checkpoint_every=2), run_dir=sys.argv[1], checkpoint_meta=meta(backbone),
    validate=simple_validate, progress=False)
"""


def toy_fit(run: Path) -> dict[str, torch.Tensor]:
    """The same fit as FIT_SCRIPT, in this process; returns the final weights."""
    torch.manual_seed(0)
    method, backbone = make_method("protonet")
    fit(method, sampler(), settings=settings(checkpoint_every=2), run_dir=run, checkpoint_meta=meta(backbone),
        validate=simple_validate, progress=False)
    return method.state_dict()


def killed(command: list[str], boundary: str, **kwargs) -> None:
    """Run ``command`` with the kill hook at ``boundary``; it must die there by SIGKILL."""
    env = {**os.environ, KILL_ENV: boundary, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False, **kwargs)
    assert done.returncode == -signal.SIGKILL, f"not killed at {boundary} (exit {done.returncode}): {done.stderr[-2000:]}"


def train_log(run: Path) -> list[tuple[int, float]]:
    """(step, loss) of every training record in ``metrics.jsonl``."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def assert_tidy_and_equal(run: Path, reference: Path) -> None:
    """``run`` publishes the same weights as ``reference``, logged each step once, and holds no leftovers."""
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    published = read_pointer(run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == sorted(p.name for p in published.values())
    for role in ("best", "last"):
        mine = load_file(str(resolve_checkpoint(run / f"{role}.safetensors")))
        theirs = load_file(str(resolve_checkpoint(reference / f"{role}.safetensors")))
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            assert torch.equal(mine[key], value), f"{role}: {key} differs from the uninterrupted run"
    assert train_log(run) == train_log(reference)  # each step exactly once, with the uninterrupted loss


def assert_consistent(run: Path) -> None:
    """Whatever a kill left: the published last checkpoint loads, and its state is of the same step."""
    published = read_pointer(run)
    if not published:
        return
    info = read_checkpoint_info(published["last"] / "model.safetensors")
    assert load_state(published["last"] / "train_state.safetensors")["step"] == info.metrics["step"]
    for folder in published.values():
        load_checkpoint(folder / "model.safetensors")


@pytest.fixture(scope="module")
def toy_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    toy_fit(run)
    return run


@pytest.mark.parametrize(
    "boundary",  # the slow test below reaches every boundary; one subprocess here keeps the quick suite quick
    ["last/renamed", pytest.param("best/sidecar", marks=pytest.mark.slow),
     pytest.param("pointer/written", marks=pytest.mark.slow)],
)
def test_a_fit_killed_at_a_write_boundary_resumes_bit_for_bit(boundary: str, toy_reference: Path,
                                                             tmp_path: Path) -> None:
    run = tmp_path / "run"
    killed([sys.executable, "-c", FIT_SCRIPT, str(run)], boundary)
    assert_consistent(run)
    toy_fit(run)
    assert_tidy_and_equal(run, toy_reference)


CLI_CONFIG = """
data: {train: [pneumoniamnist], val: [breastmnist], test: [breastmnist], channels: 1, augment: none}
episode: {ways: 2, shots: 1, queries: 2}
backbone: {name: conv4, hidden: 8}
method: {name: protonet}
train: {steps: 4, meta_batch: 2, optimizer: adam, lr: 0.01, eval_every: 2, eval_episodes: 2, checkpoint_every: 1,
        log_every: 1, device: cpu}
"""


@pytest.mark.slow
def test_medfew_train_killed_at_every_write_boundary_in_turn_ends_as_an_uninterrupted_run(
    data_root: Path, tmp_path: Path
) -> None:
    """One run directory, killed at each boundary in turn (each rerun resumes, then dies at the next one).

    Step 1 publishes a last checkpoint; step 2 validates, so it writes a best and a last: every rerun
    resumes at step 1 and reaches each boundary of step 2 until a rerun publishes it.
    """
    config = tmp_path / "tiny.yaml"
    config.write_text(CLI_CONFIG)

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "medfew", "train", "--config", str(config), "--out", str(out), "--quiet",
                "--data-root", str(data_root)]

    for boundary in BOUNDARIES:
        killed(command(tmp_path / "run"), boundary)
        assert_consistent(tmp_path / "run")
    for out in ("run", "reference"):
        done = subprocess.run(command(tmp_path / out), capture_output=True, text=True, timeout=600, check=False,
                              env={k: v for k, v in os.environ.items() if k != KILL_ENV})
        assert done.returncode == 0, done.stderr[-2000:]
    assert_tidy_and_equal(tmp_path / "run", tmp_path / "reference")
    assert read_pointer(tmp_path / "run")["last"].name == "last-000004"


def test_stale_temporaries_and_unpublished_folders_are_removed_on_start(toy_reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(toy_reference, run)
    published = read_pointer(run)
    leftovers = [run / "checkpoints" / "last-000009.tmp", run / "checkpoints" / "last-000008",
                 run / f".{POINTER}.tmp", run / ".last.safetensors.ab12.tmp", published["best"] / ".model.json.x.tmp"]
    for path in leftovers[:2]:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"half")
    for path in leftovers[2:]:
        path.write_bytes(b"half")
    (run / "last.json").write_text("{}")  # a flat file of the older layout, once the run is published
    removed = clean_stale(run)
    assert sorted(removed) == sorted([*leftovers, run / "last.json"])
    assert read_pointer(run) == published and not any(p.exists() for p in removed)
    assert_tidy_and_equal(run, toy_reference)


@pytest.mark.parametrize(
    ("pointer", "match"),
    [
        ("{not json", "not a readable checkpoint pointer"),
        ('["last-000006"]', "a JSON object with 'last'"),
        ('{"best": "best-000003"}', "a JSON object with 'last'"),
        ('{"last": "../../etc"}', r"'last' must name a last-NNNNNN step directory, got '../../etc'"),
        ('{"last": "best-000003"}', "'last' must name a last-NNNNNN"),
        ('{"last": "last-000099"}', "names checkpoints/last-000099, which holds no model.safetensors"),
    ],
)
def test_a_bad_pointer_is_refused_by_name(pointer: str, match: str, toy_reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(toy_reference, run)
    (run / POINTER).write_text(pointer)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(run)


def test_run_directories_and_flat_names_resolve_through_the_pointer(toy_reference: Path, tmp_path: Path) -> None:
    published = read_pointer(toy_reference)
    assert resolve_checkpoint(toy_reference) == published["best"] / "model.safetensors"
    assert resolve_checkpoint(toy_reference / "last.json") == published["last"] / "model.safetensors"
    _, info = load_checkpoint(toy_reference / "best.safetensors")
    assert info.metrics["step"] == int(published["best"].name.split("-")[1]) and "val" in info.metrics
    run = tmp_path / "run"
    shutil.copytree(toy_reference, run)
    update_sidecar(run, calibration={"temperature": 1.5})  # lands in the best step directory, atomically
    method, info = load_checkpoint(run)
    assert method.temperature == 1.5 and info.path.parent == read_pointer(run)["best"]
    assert load_checkpoint(run / "last.safetensors")[1].temperature == 1.0
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]


def flatten(run: Path) -> None:
    """Turn a published run into the flat layout medfew wrote before step directories."""
    published = read_pointer(run)
    for role, folder in published.items():
        shutil.copyfile(folder / "model.safetensors", run / f"{role}.safetensors")
        shutil.copyfile(folder / "model.json", run / f"{role}.json")
    shutil.copyfile(published["last"] / "train_state.safetensors", run / "train_state.safetensors")
    shutil.rmtree(run / "checkpoints")
    (run / POINTER).unlink()


def test_a_run_of_the_older_flat_layout_loads_and_resumes_exactly(toy_reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    torch.manual_seed(0)
    method, backbone = make_method("protonet")
    fit(method, sampler(), settings=settings(checkpoint_every=2), run_dir=run, checkpoint_meta=meta(backbone),
        validate=simple_validate, until_step=4, progress=False)
    flatten(run)
    assert resolve_checkpoint(run) == run / "best.safetensors"
    load_checkpoint(run)
    toy_fit(run)  # resumes at step 4, moving the run into step directories
    assert not any((run / name).exists() for name in ("best.json", "last.safetensors", "train_state.safetensors"))
    assert_tidy_and_equal(run, toy_reference)


def test_a_flat_run_killed_between_its_writes_is_refused(toy_reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(toy_reference, run)
    flatten(run)
    state = load_state(run / "train_state.safetensors")
    save_state(run / "train_state.safetensors", {**state, "step": 4})  # last.* of step 6, state of step 4
    with pytest.raises(CheckpointError, match=r"weights are of step 6 but its training state of step 4.*--restart"):
        toy_fit(run)


def test_a_restart_forgets_the_old_checkpoints(toy_reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(toy_reference, run)
    method, backbone = make_method("protonet")
    fit(method, sampler(), settings=settings(checkpoint_every=2), run_dir=run, checkpoint_meta=meta(backbone),
        resume=False, until_step=2, progress=False)
    assert {p.name for p in read_pointer(run).values()} == {"last-000002"}
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last-000002"]


def poison_at(step: int):
    """A validation callback that turns one weight into NaN at ``step``'s validation (training diverged)."""
    calls = []

    def validate(method) -> dict:
        calls.append(1)
        if len(calls) * 3 == step:
            with torch.no_grad():
                next(method.parameters()).view(-1)[0] = float("nan")
        return simple_validate(method)

    return validate


def test_training_stops_before_saving_non_finite_weights(tmp_path: Path) -> None:
    method, backbone = make_method("protonet")
    with pytest.raises(NonFiniteWeightsError,
                       match=r"step 6: training diverged, refusing to save non-finite weights: tensor "
                             r"'backbone\.blocks\.0\.0\.weight' holds 1 NaN and 0 infinite values; "
                             r"the last good checkpoint stays published \(.*last-000005\)"):
        fit(method, sampler(), settings=settings(checkpoint_every=1), run_dir=tmp_path, checkpoint_meta=meta(backbone),
            validate=poison_at(6), progress=False)
    assert {p.name for p in read_pointer(tmp_path).values()} == {"last-000005", "best-000003"}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best-000003", "last-000005"]
    load_checkpoint(tmp_path / "last.safetensors")


def test_non_finite_weights_are_never_loaded(toy_reference: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from medfew.models.pretrained import sha256_file

    folder = tmp_path / "model"
    shutil.copytree(read_pointer(toy_reference)["last"], folder)
    weights = load_file(str(folder / "model.safetensors"))
    key = min(weights)
    weights[key].view(-1)[:2] = torch.tensor([float("inf"), float("nan")])
    save_file(weights, str(folder / "model.safetensors"))
    sidecar = json.loads((folder / "model.json").read_text())
    sidecar["weights_sha256"] = sha256_file(folder / "model.safetensors")  # a consistent, broken checkpoint
    (folder / "model.json").write_text(json.dumps(sidecar))
    with pytest.raises(NonFiniteWeightsError,
                       match=rf"model/model.safetensors: tensor '{key}' holds 1 NaN and 1 infinite values; "
                             "refusing to load a broken model"):
        load_checkpoint(folder)
