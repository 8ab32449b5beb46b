"""The clinician app's suggestion panel (``apps/clinician/suggest_panel.py``) through ``AppTest``.

Real default model, its shipped meta-dataset and real scans of the rare chest X-ray folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_app import CLASSES, Clinician, scans

from medfew.training.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps" / "clinician"))
from workspace import LoadedModel, Workspace


def loaded(data_root: Path, per_class: int, start: int = 0) -> Clinician:
    user = Clinician()
    for name in CLASSES:
        user.add_class(name)
    for name in CLASSES:
        user.upload_support(scans(data_root, name, per_class, start), name)
    return user


def test_panel_waits_for_two_scans_per_class(data_root: Path) -> None:
    user = loaded(data_root, 1)
    assert "Suggested settings" in user.texts("header")
    assert any(c.startswith("Load two or more scans in each of two or more classes") for c in user.texts("caption"))
    assert not [b for b in user.at.button if b.key == "suggest_apply"]


@pytest.mark.slow  # drives suggest, apply, adapt and reset through the whole app (about 1.5 min on 2 busy CPUs)
def test_panel_suggests_and_applies(data_root: Path) -> None:
    user = loaded(data_root, 3, start=3)  # scans 4-6 of each class: the suggestion is a fine-tuned head
    shown = [m for m in user.texts("markdown") if m.startswith("Leave-one-out on your scans: ")]
    assert len(shown) == 1 and "of 6 (" in shown[0] and "95% Wilson interval" in shown[0]
    assert any(c.startswith("Ranked on the most similar of the model's past validation tasks: ") for c in user.texts("caption"))
    suggestion = user.at.session_state["suggest_panel_result"][1]
    assert suggestion.options.get("head") == "finetune" and suggestion.check.total == 6
    user.at.button(key="suggest_apply").click()
    user.run()
    workspace = user.at.session_state["workspace"]
    assert workspace.method_options == suggestion.options
    assert all(workspace.session.method.hyperparameters()[k] == v for k, v in suggestion.options.items())
    assert [s.label for s in workspace.session.support] == [CLASSES[0]] * 3 + [CLASSES[1]] * 3
    assert user.at.button(key="suggest_apply").disabled
    assert any(m.startswith("Now using feature_transform=") for m in user.texts("success"))
    user.adapt()
    assert any(s.startswith("Adapted to 2 classes from 6 scans") for s in user.texts("success"))
    user.at.button(key="suggest_reset").click()
    user.run()
    assert user.at.session_state["workspace"].method_options == {}


def test_workspace_applies_and_resets_method_options(data_root: Path) -> None:
    method, info = load_checkpoint("default")
    workspace = Workspace(LoadedModel(method.eval(), info).new_session(uncertain_threshold=0.5, ood_factor=2.0))
    for name in CLASSES:
        workspace.add_class(name)
        assert workspace.add_uploads([(f, data) for f, data, _ in scans(data_root, name, 2)], name) == []
    assert workspace.apply_method_options({"head": "finetune", "finetune_steps": 10}) == []
    tuned = workspace.session.method
    assert (tuned.head, tuned.finetune.steps, workspace.method_options) == ("finetune", 10, {"head": "finetune",
                                                                                          "finetune_steps": 10})
    assert tuned.feature_transform == info.method_hparams["feature_transform"]
    assert workspace.session.support_counts() == dict.fromkeys(CLASSES, 2)
    workspace.apply_method_options({})
    assert workspace.session.method.hyperparameters() == method.hyperparameters()
    assert workspace.method_options == {}
