"""Checkpoints: safetensors + validated JSON sidecar; corrupt, unsafe and mismatched files refused."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from medfew.data.preprocessing import Preprocessing
from medfew.errors import CheckpointError
from medfew.methods import build_method
from medfew.models import build_backbone
from medfew.training.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint


def saved(tmp_path: Path, name: str = "protonet") -> Path:
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8)
    method = build_method(name, backbone)
    return save_checkpoint(tmp_path / "model", method, backbone="conv4", backbone_config=backbone.config(),
                           preprocessing=Preprocessing(16, 1, "zscore"), class_pool=["a/x"],
                           data_provenance=[{"name": "toy", "sha256": "0" * 64}], config={"k": 1},
                           metrics={"val": {"accuracy_mean": 0.5}})


def test_round_trip_and_sidecar_content(tmp_path: Path) -> None:
    path = saved(tmp_path)
    method, info = load_checkpoint(path)
    assert info.method == "protonet" and info.backbone == "conv4"
    assert info.preprocessing == Preprocessing(16, 1, "zscore")
    assert info.class_pool == ["a/x"] and info.metrics["val"]["accuracy_mean"] == 0.5
    assert info.medfew_version and len(info.weights_sha256) == 64
    assert not method.training
    out = method.backbone(torch.rand(2, 1, 16, 16))
    assert out.shape[0] == 2
    # a run directory and the sidecar path resolve to the same checkpoint
    assert read_checkpoint_info(tmp_path).path == path == read_checkpoint_info(path.with_suffix(".json")).path


def test_float64_weights_load_without_rounding(tmp_path: Path) -> None:
    """A float64 run (the distributed parity tests use one) resumes bit for bit, not through float32."""
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8)
    method = build_method("maml", backbone).double()
    with torch.no_grad():
        for parameter in method.parameters():
            parameter.add_(1e-12)  # below float32 resolution
    path = save_checkpoint(tmp_path / "model", method, backbone="conv4", backbone_config=backbone.config(),
                           preprocessing=Preprocessing(16, 1, "zscore"), class_pool=["a/x"],
                           data_provenance=[], config={}, metrics={})
    loaded, _ = load_checkpoint(path)
    for (name, original), (_, restored) in zip(method.state_dict().items(), loaded.state_dict().items()):
        assert restored.dtype == original.dtype, name
        assert torch.equal(restored, original), name


def test_pickle_files_are_never_opened(tmp_path: Path) -> None:
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="refusing to open a .pt file"):
        load_checkpoint(evil)


def test_corrupt_weights_fail_the_checksum(tmp_path: Path) -> None:
    path = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum .* does not match"):
        load_checkpoint(path)


def test_non_safetensors_weights_are_refused(tmp_path: Path) -> None:
    path = saved(tmp_path)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    from medfew.training.checkpoint import sha256_file

    sidecar["weights_sha256"] = sha256_file(path)
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: s.pop("method"), r"sidecar lacks \['method'\]"),
        (lambda s: s.update(format="other"), "is not 'medfew-checkpoint'"),
        (lambda s: s["backbone"]["config"].update(hidden=16), "weights do not match"),
        (lambda s: s["method"].update(name="nosuchmethod"), "cannot rebuild nosuchmethod"),
    ],
)
def test_bad_sidecars_are_explained(tmp_path: Path, edit, match: str) -> None:
    path = saved(tmp_path)
    sidecar_path = path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    edit(sidecar)
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    with pytest.raises(CheckpointError, match="no best/last/model.safetensors"):
        load_checkpoint(tmp_path)
    path = saved(tmp_path)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="sidecar model.json is missing"):
        load_checkpoint(path)


def test_non_finite_weights_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    from medfew.training.checkpoint import NonFiniteWeightsError

    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8)
    method = build_method("protonet", backbone)
    with torch.no_grad():
        method.state_dict()["backbone.blocks.1.0.weight"].view(-1)[:3] = float("-inf")
    with pytest.raises(NonFiniteWeightsError, match=r"refusing to save non-finite weights: tensor "
                                                    r"'backbone\.blocks\.1\.0\.weight' holds 0 NaN and 3 infinite"):
        save_checkpoint(tmp_path / "model", method, backbone="conv4", backbone_config=backbone.config(),
                        preprocessing=Preprocessing(16, 1, "zscore"))
    assert not list(tmp_path.iterdir())
