"""Training-state files: safetensors only, nested structures round-trip, writes are atomic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medfew.errors import CheckpointError
from medfew.training.state_io import atomic_write_bytes, load_state, save_state


def test_nested_state_round_trips(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {"step": 3, "best": None, "opt": optimizer.state_dict(), "rng": torch.get_rng_state(), "t": (1, [2.5, "x"])}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["step"] == 3 and back["best"] is None and back["t"] == (1, [2.5, "x"])
    assert torch.equal(back["rng"], state["rng"])
    assert set(back["opt"]["state"]) == {0, 1}  # integer keys survive
    fresh = torch.optim.Adam(model.parameters())
    fresh.load_state_dict(back["opt"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def test_unsupported_values_and_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot save a value of type object"):
        save_state(tmp_path / "x.safetensors", {"bad": object()})
    assert not list(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(CheckpointError, match="no such state file"):
        load_state(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_state(garbage)


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
