"""DiagnosisSession: adapt + diagnose on synthetic stripe classes, flags, saliency, leave-one-out, errors.

The helpers at the top (``stripes``, ``train_stripe_protonet``, ``stripe_checkpoint``) are shared by
``test_reporting.py`` and ``test_diagnose_cli.py``. Classes are vertical sine stripes of different
periods: per-image z-score removes brightness, so only the pattern tells them apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, write_dicom
from torch import nn

from medfew.data.episodes.episode import Episode
from medfew.data.preprocessing import Preprocessing, normalize_batch
from medfew.diagnosis import (
    SALIENCY_CAVEAT,
    DiagnosisSession,
    DistanceReference,
    describe_set,
    entropy_flags,
    last_conv_layer,
)
from medfew.errors import ConfigError, ImageInputError, NotAdaptedError, SupportSetError
from medfew.methods import build_method
from medfew.models import build_backbone
from medfew.training.checkpoint import save_checkpoint

SIZE = 28
FINE, COARSE = 4, 14
TRAIN_PERIODS = (3, 5, 8, 14)


def stripes(period: float, rng: np.random.Generator, size: int = SIZE, noise: float = 0.05) -> np.ndarray:
    """float32 ``(1, size, size)`` vertical sine stripes of ``period`` pixels, random phase, light noise."""
    phase = rng.uniform(0, period)
    row = 0.5 + 0.4 * np.sin(2 * np.pi * (np.arange(size) + phase) / period)
    image = np.tile(row, (size, 1)) + rng.normal(0, noise, (size, size))
    return np.clip(image, 0, 1).astype(np.float32)[None]


def stripes_uint8(period: float, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """``stripes`` as a uint8 ``(size, size)`` array (for PNG and DICOM files)."""
    return (stripes(period, rng, size)[0] * 255).round().astype(np.uint8)


def train_stripe_protonet(seed: int = 0, steps: int = 40, method: str = "protonet") -> nn.Module:
    """A small conv4 method meta-trained for a few steps on 2-way stripe episodes."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_method(method, build_backbone("conv4", in_channels=3, image_size=SIZE, hidden=16))
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)

    def batch(periods: list[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(np.stack([stripes(p, rng) for p in periods for _ in range(k)]))
        return normalize_batch(images.expand(-1, 3, -1, -1).contiguous()), torch.arange(len(periods)).repeat_interleave(k)

    model.train()
    for _ in range(steps):
        periods = [int(p) for p in rng.choice(TRAIN_PERIODS, 2, replace=False)]
        (si, sl), (qi, ql) = batch(periods, 3), batch(periods, 3)
        optimiser.zero_grad()
        model.training_step([Episode(si, sl, qi, ql, tuple(map(str, periods)))])
        optimiser.step()
    return model.eval()


def stripe_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Save :func:`train_stripe_protonet` as a checkpoint in ``folder``; returns the weights path."""
    model = train_stripe_protonet(seed)
    return save_checkpoint(folder / "model", model, backbone="conv4", backbone_config=model.backbone.config(),
                           preprocessing=Preprocessing(SIZE, 3, "zscore"),
                           data_provenance=[{"name": "stripes-synthetic", "sha256": "0" * 64}])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stripe_checkpoint(tmp_path_factory.mktemp("ckpt"))


def stripe_session(checkpoint: Path, rng: np.random.Generator, k: int = 3, **kwargs: float | None) -> DiagnosisSession:
    session = DiagnosisSession(checkpoint, **kwargs)
    for _ in range(k):
        session.add_support(stripes(FINE, rng), "fine")
        session.add_support(stripes(COARSE, rng), "coarse")
    return session


# ---------------------------------------------------------------------- adapt + diagnose
def test_adapt_and_diagnose_stripes(checkpoint: Path) -> None:
    rng = np.random.default_rng(1)
    session = stripe_session(checkpoint, rng)
    assert session.class_names == ("fine", "coarse") and session.support_counts() == {"fine": 3, "coarse": 3}
    assert not session.method.training
    session.adapt()
    for period, expected in [(FINE, "fine"), (COARSE, "coarse")] * 2:
        pred = session.diagnose(stripes(period, rng))
        assert pred.predicted == expected and pred.class_names[pred.predicted_index] == expected
        assert set(pred.probabilities) == {"fine", "coarse"}
        assert sum(pred.probabilities.values()) == pytest.approx(1.0)
        assert pred.probabilities[expected] == max(pred.probabilities.values())
        assert 0.0 <= pred.normalized_entropy <= 1.0
        # 6 support scans are too few for a 90% set to leave a class out: both are in, so uncertain
        assert pred.prediction_set == (expected, ({"fine", "coarse"} - {expected}).pop())
        assert pred.uncertain and pred.uncertain_rule == "set" and pred.set_confidence == pytest.approx(0.9)
        assert pred.set_note == "with 6 support scans a 90% set must hold every class; 10 or more scans in all can narrow it"
        assert pred.saliency is not None and pred.saliency.shape == (SIZE, SIZE)
        assert pred.saliency.dtype == np.float32 and pred.saliency.min() >= 0.0 and pred.saliency.max() <= 1.0
        assert pred.saliency_caveat == SALIENCY_CAVEAT and "unreliable" in pred.saliency_caveat
        assert pred.model_input.shape == (3, SIZE, SIZE) and pred.image.shape == (1, SIZE, SIZE)
    assert session.diagnose(stripes(FINE, rng), saliency=False).saliency is None


def test_uncertain_flag_follows_normalised_entropy(checkpoint: Path) -> None:
    entropy, normalised, uncertain = entropy_flags(torch.tensor([0.5, 0.5]))
    assert entropy == pytest.approx(np.log(2)) and normalised == pytest.approx(1.0) and uncertain
    _, normalised, uncertain = entropy_flags(torch.tensor([0.99, 0.005, 0.005]))
    assert normalised < 0.1 and not uncertain
    _, normalised, uncertain = entropy_flags(torch.tensor([0.85, 0.15]), threshold=0.5)
    assert normalised == pytest.approx(0.61, abs=0.01) and uncertain
    # without prediction sets the entropy rule decides: a confident prediction is not flagged, an
    # absurdly low threshold flags everything
    rng = np.random.default_rng(2)
    plain = stripe_session(checkpoint, rng, alpha=None)
    plain.adapt()
    pred = plain.diagnose(stripes(FINE, rng), saliency=False)
    assert pred.prediction_set is None and pred.uncertain_rule == "entropy" and not pred.uncertain
    assert pred.set_note == "prediction sets are off in this session" and pred.set_confidence is None
    strict = stripe_session(checkpoint, rng, uncertain_threshold=1e-9, alpha=None)
    strict.adapt()
    assert strict.diagnose(stripes(FINE, rng), saliency=False).uncertain


def test_out_of_distribution_rule(checkpoint: Path) -> None:
    rng = np.random.default_rng(3)
    session = stripe_session(checkpoint, rng)
    session.adapt()
    # support scans lie within the reference radius of their own class mean, so never beyond 2x of it
    for scan in session.support:
        pred = session.diagnose(scan.model_input[:1].numpy(), saliency=False)
        assert pred.out_of_distribution is False and pred.ood_distance is not None
        # the farthest support scan sits exactly on the radius; embedding it alone or in a batch
        # differs in float rounding with the thread count, hence a relative tolerance
        assert pred.ood_distance <= pred.ood_threshold / session.ood_factor * (1 + 1e-4)
    # a single bright dot is farther from both classes than fresh stripe scans are
    dot = np.zeros((1, SIZE, SIZE), np.float32)
    dot[0, SIZE // 2, SIZE // 2] = 1.0
    far = session.diagnose(dot, saliency=False)
    near = [session.diagnose(stripes(p, rng), saliency=False).ood_distance for p in (FINE, COARSE) * 3]
    assert far.ood_distance > max(near)
    assert far.out_of_distribution == (far.ood_distance > far.ood_threshold)


def test_distance_reference_flags_far_points_and_handles_single_scans() -> None:
    features = torch.tensor([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    ref = DistanceReference.fit(features, labels, 2, factor=2.0)
    assert ref.radius == pytest.approx(1.0) and ref.threshold == pytest.approx(2.0)
    flags = ref.is_outlier(torch.tensor([[0.0, 1.5], [5.0, 1.0], [10.0, 8.0]]))
    assert flags.tolist() == [False, True, True]
    single = DistanceReference.fit(torch.tensor([[0.0, 0.0], [6.0, 8.0]]), torch.tensor([0, 1]), 2)
    assert single.radius == pytest.approx(10.0)  # the distance between the two class means


@pytest.mark.parametrize("method", ["matchingnet", "fomaml", "maml", "l2o", "reptile"])
def test_other_methods_diagnose_with_saliency(method: str) -> None:
    model = build_method(method, build_backbone("conv4", in_channels=3, image_size=SIZE, hidden=8))
    session = DiagnosisSession.from_method(model, Preprocessing(SIZE, 3, "zscore"))
    rng = np.random.default_rng(4)
    for _ in range(2):
        session.add_support(stripes(FINE, rng), "fine")
        session.add_support(stripes(COARSE, rng), "coarse")
    steps: list[tuple[int, int]] = []
    session.adapt(inner_progress=lambda step, total: steps.append((step, total)))
    inner = getattr(model, "test_inner_steps", 0)  # matchingnet has no inner loop: nothing to report
    assert steps == [(k, inner) for k in range(1, inner + 1)]  # the adapt itself, not the leave-one-out folds
    assert getattr(model, "_on_inner_step", None) is None  # the hook lives for the adapt only
    pred = session.diagnose(stripes(FINE, rng))
    assert sum(pred.probabilities.values()) == pytest.approx(1.0)
    assert pred.saliency is not None and pred.saliency.shape == (SIZE, SIZE)
    assert 0.0 <= pred.saliency.min() <= pred.saliency.max() <= 1.0
    assert pred.ood_distance is not None and isinstance(pred.out_of_distribution, bool)
    hooked = [name for name, sub in session.method.named_modules() if sub._forward_hooks or sub._backward_hooks]
    assert hooked == []  # Grad-CAM's hooks live for one call only
    assert session.leave_one_out().total == 4  # adapting again after a saliency map works (torch.func)
    again = session.diagnose(stripes(FINE, rng))
    assert again.saliency is not None and again.saliency.shape == (SIZE, SIZE)


# ---------------------------------------------------------------------- support-set editing
def test_adapt_is_cached_until_the_support_set_changes(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    session = stripe_session(checkpoint, rng)
    calls = []
    real_adapt = session.method.adapt
    monkeypatch.setattr(session.method, "adapt", lambda *a: calls.append(1) or real_adapt(*a))
    session.adapt()
    session.adapt()
    assert len(calls) == 1 and session.is_adapted
    session.add_support(stripes(FINE, rng), "fine")
    assert not session.is_adapted
    with pytest.raises(NotAdaptedError, match="support set changed since adapt"):
        session.diagnose(stripes(FINE, rng))
    session.adapt()
    assert len(calls) == 2 and session.diagnose(stripes(FINE, rng), saliency=False).predicted == "fine"


def test_remove_relabel_and_classes(checkpoint: Path) -> None:
    rng = np.random.default_rng(6)
    session = stripe_session(checkpoint, rng, k=2)
    session.remove_support(0)
    assert session.support_counts() == {"fine": 1, "coarse": 2}
    assert [scan.label for scan in session.support] == ["coarse", "fine", "coarse"]
    session.relabel_support(1, "coarse")
    assert session.support_counts() == {"fine": 0, "coarse": 3}  # the class stays declared
    session.relabel_support(-1, "third")
    assert session.class_names == ("fine", "coarse", "third")
    session.remove_class("third")
    assert session.support_counts() == {"fine": 0, "coarse": 2} and len(session.support) == 2
    with pytest.raises(SupportSetError, match="no class 'nope'"):
        session.remove_class("nope")
    with pytest.raises(SupportSetError, match="no support scan at index 7; the session holds 2"):
        session.remove_support(7)
    with pytest.raises(SupportSetError, match="no support scan at index"):
        session.relabel_support(True, "fine")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="class label must be a non-empty string"):
        session.add_support(stripes(FINE, rng), "  ")


def test_leave_one_out(checkpoint: Path) -> None:
    rng = np.random.default_rng(7)
    session = stripe_session(checkpoint, rng, k=3)
    calls: list[tuple[int, int]] = []
    result = session.leave_one_out(progress=lambda done, total: calls.append((done, total)))
    assert result.total == 6 and result.correct == 6 and result.accuracy == 1.0
    assert calls == [(6, 6)]  # ProtoNet scores all left-out scans at once (exact, from features computed once)
    assert result.per_class == {"fine": 1.0, "coarse": 1.0}
    # a mislabelled scan is caught: predicted from the others as what it really is
    session.relabel_support(0, "coarse")  # a fine-stripe scan now labelled coarse
    result = session.leave_one_out()
    assert result.correct <= 5 and result.per_class["coarse"] < 1.0
    session.remove_support(1)  # "coarse" keeps 3, "fine" keeps 2
    session.add_class("rare")
    session.add_support(stripes(8, rng), "rare")
    with pytest.raises(SupportSetError, match=r"at least 2 scans per class; \['rare'\] have \[1\]"):
        session.leave_one_out()


# ---------------------------------------------------------------------- inputs
def test_paths_bytes_and_uint8_arrays_give_the_same_image(checkpoint: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    pixels = stripes_uint8(FINE, rng)
    png = tmp_path / "scan.png"
    Image.fromarray(pixels).save(png)
    session = stripe_session(checkpoint, rng)
    session.adapt()
    by_path = session.diagnose(png, saliency=False)
    by_bytes = session.diagnose(png.read_bytes(), name="upload.png", saliency=False)
    by_array = session.diagnose(pixels, saliency=False)
    assert by_path.image_sha256 == by_bytes.image_sha256 == by_array.image_sha256
    assert by_path.probabilities == pytest.approx(by_array.probabilities)
    assert by_path.dicom is None


def test_dicom_query_keeps_its_header_but_repr_hides_identifiers(checkpoint: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    path = write_dicom(tmp_path / "query.dcm", stripes_uint8(FINE, rng), modality="CR")
    session = stripe_session(checkpoint, rng)
    session.adapt()
    pred = session.diagnose(path)
    assert pred.dicom is not None and pred.dicom.identifying["PatientID"] == FAKE_PATIENT_ID
    assert pred.dicom.modality == "CR"
    assert FAKE_PATIENT_NAME not in repr(pred) and FAKE_PATIENT_ID not in repr(pred)


# ---------------------------------------------------------------------- errors
def test_error_branches(checkpoint: Path) -> None:
    rng = np.random.default_rng(10)
    session = DiagnosisSession(checkpoint)
    with pytest.raises(NotAdaptedError, match="call adapt"):
        session.diagnose(stripes(FINE, rng))
    with pytest.raises(SupportSetError, match="at least 2 classes, got 0"):
        session.adapt()
    session.add_support(stripes(FINE, rng), "fine")
    with pytest.raises(SupportSetError, match=r"at least 2 classes, got 1: \['fine'\]"):
        session.adapt()
    session.add_class("coarse")
    with pytest.raises(SupportSetError, match=r"class\(es\) \['coarse'\] have no scans"):
        session.adapt()
    with pytest.raises(ImageInputError, match="numpy array, a torch tensor, a file path or file bytes, got list"):
        session.add_support([[0.0]], "coarse")  # type: ignore[arg-type]
    with pytest.raises(ImageInputError, match=r"\(H, W\) or \(C, H, W\) with C 1 or 3, got shape \(4, 28, 28\)"):
        session.add_support(np.zeros((4, SIZE, SIZE), np.float32), "coarse")
    with pytest.raises(ImageInputError, match="float in \\[0, 1\\] or uint8, got dtype int64"):
        session.add_support(np.zeros((SIZE, SIZE), np.int64), "coarse")
    with pytest.raises(ImageInputError, match="finite values in \\[0, 1\\]"):
        session.add_support(np.full((SIZE, SIZE), 2.0, np.float32), "coarse")
    with pytest.raises(ConfigError, match="uncertain_threshold must be in \\(0.0, 1.0\\), got 1.5"):
        DiagnosisSession(checkpoint, uncertain_threshold=1.5)
    with pytest.raises(ConfigError, match="ood_factor must be a finite number"):
        DiagnosisSession(checkpoint, ood_factor=float("nan"))
    with pytest.raises(ConfigError, match=r"alpha must be in \(0, 1\) \(e.g. 0.1 for 90% sets\), got 1.5"):
        DiagnosisSession(checkpoint, alpha=1.5)
    hot = train_stripe_protonet(steps=0)
    hot.temperature = -2.0
    with pytest.raises(ConfigError, match="the model's temperature must be a finite number > 0, got -2.0"):
        DiagnosisSession.from_method(hot, Preprocessing(SIZE, 3, "zscore"))
    with pytest.raises(ConfigError, match="Linear has no Conv2d layer"):
        last_conv_layer(nn.Linear(2, 2))


# ---------------------------------------------------------------------- calibration and prediction sets
def test_probabilities_are_divided_by_the_model_temperature(checkpoint: Path) -> None:
    rng = np.random.default_rng(11)
    plain, hot = stripe_session(checkpoint, np.random.default_rng(11)), stripe_session(checkpoint, rng)
    hot.method.temperature = 4.0  # as load_checkpoint sets it from a calibrated checkpoint
    plain.adapt()
    hot.adapt()
    query = stripes(COARSE, np.random.default_rng(12))
    p1, p4 = plain.diagnose(query, saliency=False), hot.diagnose(query, saliency=False)
    logits = np.log([p1.probabilities[c] for c in plain.class_names])  # log-softmax = logits up to a shift
    expected = np.exp(logits / 4.0) / np.exp(logits / 4.0).sum()
    np.testing.assert_allclose([p4.probabilities[c] for c in hot.class_names], expected, rtol=1e-6)
    assert p4.predicted == p1.predicted and p4.probabilities[p4.predicted] < p1.probabilities[p1.predicted]
    assert p4.temperature == 4.0 and p1.temperature == 1.0 and hot.temperature == 4.0
    assert p4.to_dict()["temperature"] == 4.0


def test_enough_support_scans_give_single_class_sets_with_their_statement(checkpoint: Path) -> None:
    rng = np.random.default_rng(13)
    session = stripe_session(checkpoint, rng, k=5)  # 10 scans: a 90% set can leave a class out
    session.adapt()
    for period, expected in ((FINE, "fine"), (COARSE, "coarse")):
        pred = session.diagnose(stripes(period, rng), saliency=False)
        assert pred.prediction_set == (expected,) and not pred.uncertain and pred.uncertain_rule == "set"
        assert pred.set_note is None and pred.set_confidence == pytest.approx(0.9)
        assert pred.set_statement == (
            f"{expected} — the true class is in this set in at least 90% of cases if the support scans are "
            "representative (exchangeable), estimated by leave-one-out"
        )
    data = pred.to_dict()
    assert data["prediction_set"] == ["coarse"] and data["set_confidence"] == pytest.approx(0.9)
    assert data["uncertain_rule"] == "set" and data["set_statement"].startswith("coarse — ")
    # a stricter level needs more scans than there are: every class is back in the set
    strict = stripe_session(checkpoint, rng, k=5, alpha=0.05)
    strict.adapt()
    pred = strict.diagnose(stripes(FINE, rng), saliency=False)
    assert set(pred.prediction_set) == {"fine", "coarse"} and pred.uncertain
    assert pred.set_note.startswith("with 10 support scans a 95% set must hold every class; 19 or more")
    assert describe_set(("a", "b", "c"), 0.8, None).startswith("a, b or c — the true class is in this set in at least 80%")
    assert describe_set((), 0.9, None).startswith("empty set — no class fits this scan at the 90% level")


def test_a_class_with_one_scan_has_no_set_and_falls_back_to_entropy(checkpoint: Path) -> None:
    rng = np.random.default_rng(14)
    session = stripe_session(checkpoint, rng, k=3)
    session.add_support(stripes(8, rng), "rare")
    session.adapt()
    pred = session.diagnose(stripes(FINE, rng), saliency=False)
    assert pred.prediction_set is None and pred.set_confidence is None and pred.uncertain_rule == "entropy"
    assert pred.set_note == (
        "class ['rare'] has fewer than 2 support scans, so leave-one-out cannot score them and there is no prediction set"
    )
    assert pred.uncertain == (pred.normalized_entropy > pred.uncertain_threshold)
    assert pred.set_statement == f"No prediction set: {pred.set_note}"


def test_leave_one_out_scores_are_computed_once_at_adapt(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(15)
    session = stripe_session(checkpoint, rng, k=5)
    scored: list[int] = []
    real = session.method.leave_one_out_logits
    monkeypatch.setattr(session.method, "leave_one_out_logits",
                        lambda images, labels: scored.append(len(labels)) or real(images, labels))
    session.adapt()
    assert scored == [10]
    calls: list[tuple[int, int]] = []
    result = session.leave_one_out(progress=lambda done, total: calls.append((done, total)))
    assert scored == [10] and calls == [(10, 10)] and result.total == 10  # read, not recomputed
    session.remove_support(0)
    assert session.leave_one_out().total == 9 and scored == [10, 9]  # a new support set: adapted again
    # with sets off, adapt skips the scores and leave_one_out computes them when asked
    off = stripe_session(checkpoint, rng, k=3, alpha=None)
    monkeypatch.setattr(off.method, "leave_one_out_logits",
                        lambda images, labels: scored.append(len(labels)) or real(images, labels))
    off.adapt()
    assert scored == [10, 9]
    assert off.leave_one_out().total == 6 and scored == [10, 9, 6]


def test_slow_methods_report_leave_one_out_progress_per_scan_at_adapt() -> None:
    model = build_method("fomaml", build_backbone("conv4", in_channels=3, image_size=SIZE, hidden=8), inner_steps=1)
    session = DiagnosisSession.from_method(model, Preprocessing(SIZE, 3, "zscore"))
    rng = np.random.default_rng(16)
    for _ in range(2):
        session.add_support(stripes(FINE, rng), "fine")
        session.add_support(stripes(COARSE, rng), "coarse")
    calls: list[tuple[int, int]] = []
    session.adapt(progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # one adapt per left-out scan, each reported
    assert session.diagnose(stripes(FINE, rng), saliency=False).prediction_set is not None
