"""``DiagnosisSession``: a clinician's support set -> adapted model -> diagnosed query scans.

Usage::

    session = DiagnosisSession("default")            # or a run directory / .safetensors file
    session.add_support("scans/rare/a.dcm", "rare")
    session.add_support(png_bytes, "normal", name="upload.png")
    session.adapt()                                   # the method's own adapt, cached until the set changes
    prediction = session.diagnose("query.dcm")        # probabilities, prediction set, flags, saliency
    prediction.prediction_set                         # e.g. ("glioma", "meningioma")
    session.leave_one_out().accuracy                  # reliability of the support set

Every image goes through the checkpoint's preprocessing (resize and pad to ``image_size``, channel
policy, per-image normalisation), the same as at training.

Probabilities are calibrated: ``softmax(logits / T)`` with the method's ``temperature`` ``T`` (fitted
on the meta-train domains' val episodes and stored in the checkpoint; 1.0 when never calibrated).
``adapt`` also scores every support scan with the model adapted to the others, once
(:func:`medfew.evaluation.conformal.leave_one_out_logits`: one extra adapt per scan unless the method
has a cheaper exact version), and fits conformal prediction sets at level ``alpha`` on those scores
(:class:`medfew.evaluation.conformal.ConformalSets`; what the sets promise is in that module's
docstring); :meth:`DiagnosisSession.leave_one_out` reads its reliability estimate from the same
scores. See :mod:`medfew.diagnosis.uncertainty` for the *uncertain* and *out of distribution* rules
and :mod:`medfew.diagnosis.saliency` for Grad-CAM.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfew.data.preprocessing import Preprocessing
from medfew.data.readers import Window
from medfew.diagnosis.inputs import ImageInput, LoadedImage, load_input
from medfew.diagnosis.prediction import LeaveOneOutResult, Prediction
from medfew.diagnosis.saliency import SALIENCY_CAVEAT, SaliencyMapper
from medfew.diagnosis.uncertainty import (
    OOD_FACTOR,
    UNCERTAIN_THRESHOLD,
    DistanceReference,
    check_threshold,
    entropy_flags,
)
from medfew.errors import (
    ConfigError,
    ModelOutputError,
    NotAdaptedError,
    SupportSetError,
)
from medfew.evaluation.calibration import check_temperature
from medfew.evaluation.conformal import (
    DEFAULT_ALPHA,
    ConformalSets,
    Progress,
    check_alpha,
    leave_one_out_logits,
    leave_one_out_unavailable,
    min_support_for,
)
from medfew.methods.base import AdaptedModel, FewShotMethod
from medfew.methods.gradient_based import reporting_inner_steps
from medfew.training.checkpoint import CheckpointInfo, load_checkpoint


@dataclass(frozen=True)
class SupportScan:
    """One labelled support scan.

    Attributes:
        label: Class name.
        model_input: float32 ``(C, S, S)`` in ``[0, 1]`` (preprocessed, not normalised).
        sha256: sha256 of the decoded pixels (never the file name).
    """

    label: str
    model_input: torch.Tensor
    sha256: str


@dataclass(frozen=True)
class _Adapted:
    """The model adapted to one version of the support set, and what was computed with it.

    Attributes:
        loo_logits: ``(S, N)`` raw leave-one-out logits of the support scans, or ``None`` (a class
            with a single scan, or not computed yet when sets are off).
        sets: The conformal sets fitted on them, or ``None``.
        set_note: Why there are no sets, or why they hold every class; ``None`` otherwise.
    """

    model: AdaptedModel
    reference: DistanceReference | None
    version: int
    loo_logits: torch.Tensor | None = None
    sets: ConformalSets | None = None
    set_note: str | None = None


class DiagnosisSession:
    """A support set, the model adapted to it, and diagnoses of query scans.

    Args:
        checkpoint: ``"default"``, a run directory or a ``.safetensors`` file (see
            :func:`medfew.training.checkpoint.load_checkpoint`).
        uncertain_threshold: Normalised-entropy threshold of the *uncertain* flag where there is no
            prediction set, in ``(0, 1)``.
        ood_factor: Multiple of the support reference radius beyond which a query is out of distribution.
        device: Torch device of the model (``"cpu"`` or ``"cuda"``).
        method_options: Test-time method hyperparameters (see ``load_checkpoint``).
        alpha: Level of the conformal prediction sets (0.1: sets meant to hold the true class in at
            least 90% of cases), or ``None`` for no sets.

    Raises:
        CheckpointError: The checkpoint is missing, corrupt or mismatched.
        ConfigError: A threshold or ``alpha`` out of range, or a bad method temperature.
    """

    def __init__(
        self,
        checkpoint: str | Path = "default",
        *,
        uncertain_threshold: float = UNCERTAIN_THRESHOLD,
        ood_factor: float = OOD_FACTOR,
        device: str = "cpu",
        method_options: dict[str, Any] | None = None,
        alpha: float | None = DEFAULT_ALPHA,
    ) -> None:
        method, info = load_checkpoint(checkpoint, map_location=device, method_options=method_options)
        self._setup(method, info.preprocessing, info, uncertain_threshold, ood_factor, device, alpha)

    @classmethod
    def from_method(
        cls,
        method: FewShotMethod,
        preprocessing: Preprocessing,
        *,
        uncertain_threshold: float = UNCERTAIN_THRESHOLD,
        ood_factor: float = OOD_FACTOR,
        device: str = "cpu",
        info: CheckpointInfo | None = None,
        alpha: float | None = DEFAULT_ALPHA,
    ) -> DiagnosisSession:
        """A session around an in-memory method.

        Args:
            method: The few-shot method (the session puts it in eval mode; give each session its own
                copy). Its ``temperature`` calibrates the probabilities.
            preprocessing: How images are prepared for it.
            uncertain_threshold: See the class.
            ood_factor: See the class.
            device: See the class.
            info: The checkpoint it came from (model provenance in reports), or ``None``.
            alpha: See the class.
        """
        session = cls.__new__(cls)
        session._setup(method.to(device), preprocessing, info, uncertain_threshold, ood_factor, device, alpha)
        return session

    def _setup(
        self,
        method: FewShotMethod,
        preprocessing: Preprocessing,
        info: CheckpointInfo | None,
        uncertain_threshold: float,
        ood_factor: float,
        device: str,
        alpha: float | None,
    ) -> None:
        self.method = method.eval()
        self.preprocessing = preprocessing
        self.info = info
        self.device = torch.device(device)
        self.uncertain_threshold = check_threshold("uncertain_threshold", uncertain_threshold, 0.0, 1.0)
        self.ood_factor = check_threshold("ood_factor", ood_factor, 0.0, None)
        self.alpha = None if alpha is None else check_alpha(alpha)
        check_temperature(getattr(method, "temperature", 1.0), "the model's temperature")
        self._scans: list[SupportScan] = []
        self._classes: list[str] = []
        self._version = 0
        self._adapted: _Adapted | None = None
        self._saliency: SaliencyMapper | None = None

    @property
    def temperature(self) -> float:
        """The model's logit temperature ``T``: probabilities are ``softmax(logits / T)``."""
        return check_temperature(getattr(self.method, "temperature", 1.0), "the model's temperature")

    # ------------------------------------------------------------------ support set
    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in order of first declaration or first use."""
        return tuple(self._classes)

    @property
    def support(self) -> tuple[SupportScan, ...]:
        """The support scans, in insertion order (indices used by ``remove_support`` / ``relabel_support``)."""
        return tuple(self._scans)

    def support_counts(self) -> dict[str, int]:
        """Class name -> number of support scans (0 for a declared class without scans)."""
        counts = Counter(scan.label for scan in self._scans)
        return {name: counts.get(name, 0) for name in self._classes}

    def add_class(self, name: str) -> None:
        """Declare a class (it must get at least one scan before ``adapt``)."""
        name = _check_label(name)
        if name not in self._classes:
            self._classes.append(name)
            self._changed()

    def remove_class(self, name: str) -> None:
        """Remove a class and all its scans."""
        if name not in self._classes:
            raise SupportSetError(f"no class {name!r} in the session; classes are {self._classes}")
        self._classes.remove(name)
        self._scans = [scan for scan in self._scans if scan.label != name]
        self._changed()

    def add_support(
        self, image: ImageInput, label: str, *, name: str | None = None, window: Window | str | None = None
    ) -> int:
        """Add one labelled scan; returns its index in :attr:`support`.

        Args:
            image: An array, a file path or file bytes (see :func:`medfew.diagnosis.inputs.load_input`).
            label: Class name (declared on first use).
            name: For bytes, the upload's file name (error messages only; never stored).
            window: DICOM window (see :func:`medfew.diagnosis.inputs.load_input`).

        Raises:
            ImageInputError: Unsupported image type or shape.
            ImageReadError: Unreadable file.
        """
        label = _check_label(label)
        loaded = load_input(image, name, window=window)
        self._scans.append(SupportScan(label=label, model_input=self._model_input(loaded), sha256=loaded.sha256))
        if label not in self._classes:
            self._classes.append(label)
        self._changed()
        return len(self._scans) - 1

    def remove_support(self, index: int) -> None:
        """Remove the scan at ``index`` (its class stays declared)."""
        self._scans.pop(self._check_index(index))
        self._changed()

    def relabel_support(self, index: int, label: str) -> None:
        """Give the scan at ``index`` another class."""
        index, label = self._check_index(index), _check_label(label)
        scan = self._scans[index]
        self._scans[index] = SupportScan(label=label, model_input=scan.model_input, sha256=scan.sha256)
        if label not in self._classes:
            self._classes.append(label)
        self._changed()

    # ------------------------------------------------------------------ adapt / diagnose
    @property
    def is_adapted(self) -> bool:
        """Whether ``adapt`` ran on the current support set."""
        return self._adapted is not None and self._adapted.version == self._version

    def adapt(self, progress: Progress | None = None, *, inner_progress: Progress | None = None) -> None:
        """Adapt the model to the support set, and fit the prediction sets (a no-op if already done).

        With ``alpha`` set and at least two scans in every class, every support scan is also scored by
        the model adapted to the others (leave-one-out), once; the prediction sets and
        :meth:`leave_one_out` use those scores.

        Args:
            progress: ``progress(done, total)`` during leave-one-out (one adapt per support scan for
                methods without a cheaper exact version: slow for the MAML family).
            inner_progress: ``inner_progress(step, steps)`` after each inner gradient step of the adapt
                itself (the MAML family, Reptile, l2o; other methods have no steps to report).

        Raises:
            SupportSetError: Fewer than two classes, or a class without scans.
        """
        if self.is_adapted:
            return
        images, labels = self._support_tensors(self._scans)
        with reporting_inner_steps(self.method, inner_progress):
            model = self._run_adapt(images, labels)
        with torch.no_grad():
            features = model.embed(images)
            _require_finite(model.predict(images), "scores of the support scans")
        if features is not None:
            _require_finite(features, "features of the support scans")
        reference = (
            None if features is None
            else DistanceReference.fit(features, labels, len(self._classes), factor=self.ood_factor)
        )
        adapted = _Adapted(model=model, reference=reference, version=self._version)
        if self.alpha is None:
            adapted = dataclasses.replace(adapted, set_note="prediction sets are off in this session")
        else:
            reason = leave_one_out_unavailable(labels, self._classes)
            if reason is not None:
                adapted = dataclasses.replace(adapted, set_note=reason)
            else:
                adapted = self._with_sets(adapted, leave_one_out_logits(self.method, images, labels, progress=progress),
                                          labels)
        self._adapted = adapted

    @property
    def set_note(self) -> str | None:
        """For the adapted support set: why there are no prediction sets, or why they must hold every
        class (too few scans for the level); ``None`` when the sets can single out a class or before
        ``adapt``."""
        return self._adapted.set_note if self.is_adapted and self._adapted is not None else None

    def diagnose(
        self,
        image: ImageInput,
        *,
        name: str | None = None,
        saliency: bool = True,
        window: Window | str | None = None,
    ) -> Prediction:
        """Diagnose one query scan with the adapted model.

        Args:
            image: An array, a file path or file bytes.
            name: For bytes, the upload's file name (error messages only).
            saliency: Compute the Grad-CAM map (one backward pass).
            window: DICOM window (see :func:`medfew.diagnosis.inputs.load_input`).

        Raises:
            NotAdaptedError: ``adapt`` was not called on the current support set.
            ImageInputError: Unsupported image type or shape.
        """
        adapted = self._require_adapted()
        loaded = load_input(image, name, window=window)
        model_input = self._model_input(loaded)
        x = self._normalize(model_input.unsqueeze(0))
        temperature = self.temperature
        with torch.no_grad():
            logits = _require_finite(adapted.model.predict(x), f"scores of {name or 'the query'}")
            probabilities = torch.softmax(logits.double() / temperature, dim=-1)[0].cpu()
            features = adapted.model.embed(x) if adapted.reference is not None else None
        index = int(probabilities.argmax())
        entropy, normalized, uncertain = entropy_flags(probabilities, self.uncertain_threshold)
        members: tuple[str, ...] | None = None
        if adapted.sets is not None:
            inside = adapted.sets.predict(probabilities[None].numpy())[0]
            order = np.argsort(-probabilities.numpy(), kind="stable")
            members = tuple(self._classes[i] for i in order if inside[i])
            uncertain = len(members) != 1
        distance = threshold = outlier = None
        if adapted.reference is not None and features is not None:
            distance = float(adapted.reference.distance(features)[0])
            threshold = adapted.reference.threshold
            outlier = distance > threshold
        return Prediction(
            predicted=self._classes[index],
            predicted_index=index,
            class_names=self.class_names,
            probabilities={c: float(p) for c, p in zip(self._classes, probabilities.tolist())},
            entropy=entropy,
            normalized_entropy=normalized,
            uncertain=uncertain,
            uncertain_threshold=self.uncertain_threshold,
            ood_distance=distance,
            ood_threshold=threshold,
            out_of_distribution=outlier,
            saliency=self._saliency_map(adapted.model, x, index) if saliency else None,
            saliency_caveat=SALIENCY_CAVEAT,
            image=loaded.pixels,
            model_input=model_input.cpu().numpy(),
            image_sha256=loaded.sha256,
            dicom=loaded.dicom,
            prediction_set=members,
            set_confidence=None if adapted.sets is None else adapted.sets.confidence,
            set_note=adapted.set_note,
            temperature=temperature,
            uncertain_rule="entropy" if members is None else "set",
        )

    def leave_one_out(self, progress: Progress | None = None) -> LeaveOneOutResult:
        """Predict each support scan from the others: the reliability of the support set.

        Reads the leave-one-out scores that :meth:`adapt` computed (adapting first when needed; computing
        them now when the session has no prediction sets), so no scan is adapted to twice.

        Args:
            progress: Called as ``progress(done, total)`` while the scores are computed (after each
                left-out scan for methods that adapt once per scan, which is slow for the MAML family;
                once at the end for methods with a faster exact version or when the scores were ready).

        Raises:
            SupportSetError: A class with fewer than two scans (its scan could not be left out),
                or fewer than two classes.
        """
        counts = self.support_counts()
        self._check_classes(counts)
        small = [c for c, n in counts.items() if n < 2]
        if small:
            raise SupportSetError(
                f"leave-one-out needs at least 2 scans per class; {small} have {[counts[c] for c in small]}"
            )
        ready = self.is_adapted and self._adapted is not None and self._adapted.loo_logits is not None
        self.adapt(progress)
        adapted = self._require_adapted()
        if adapted.loo_logits is None:  # sets are off: the scores were not needed until now
            images, labels = self._support_tensors(self._scans)
            loo = leave_one_out_logits(self.method, images, labels, progress=progress)
            adapted = self._adapted = dataclasses.replace(adapted, loo_logits=loo)
        elif ready and progress is not None:
            progress(len(self._scans), len(self._scans))
        predicted = adapted.loo_logits.argmax(dim=1).tolist()  # type: ignore[union-attr]
        hits: Counter[str] = Counter(
            scan.label for scan, p in zip(self._scans, predicted) if self._classes[p] == scan.label
        )
        correct = sum(hits.values())
        return LeaveOneOutResult(
            accuracy=correct / len(self._scans),
            correct=correct,
            total=len(self._scans),
            per_class={c: hits[c] / counts[c] for c in self._classes},
        )

    # ------------------------------------------------------------------ internals
    def _with_sets(self, adapted: _Adapted, loo: torch.Tensor, labels: torch.Tensor) -> _Adapted:
        """``adapted`` with the leave-one-out logits and the conformal sets fitted on them."""
        _require_finite(loo, "leave-one-out scores of the support scans")
        assert self.alpha is not None
        probabilities = torch.softmax(loo.double() / self.temperature, dim=-1).cpu()
        sets = ConformalSets.fit(probabilities, labels.cpu(), self.alpha)
        note = None
        if sets.always_full:
            level = f"{100 * sets.confidence:g}%"
            note = (f"with {sets.n_calibration} support scans a {level} set must hold every class; "
                    f"{min_support_for(self.alpha)} or more scans in all can narrow it")
        return dataclasses.replace(adapted, loo_logits=loo, sets=sets, set_note=note)

    def _changed(self) -> None:
        self._version += 1

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int) or not -len(self._scans) <= index < len(self._scans):
            raise SupportSetError(f"no support scan at index {index!r}; the session holds {len(self._scans)}")
        return index

    def _model_input(self, loaded: LoadedImage) -> torch.Tensor:
        return self.preprocessing.prepare(loaded.pixels)

    def _normalize(self, batch: torch.Tensor) -> torch.Tensor:
        return self.preprocessing.normalize_batch(batch.to(self.device))

    def _check_classes(self, counts: dict[str, int]) -> None:
        if len(counts) < 2:
            raise SupportSetError(f"a support set needs at least 2 classes, got {len(counts)}: {list(counts)}")
        empty = [c for c, n in counts.items() if n == 0]
        if empty:
            raise SupportSetError(f"class(es) {empty} have no scans; add scans or remove the class")

    def _support_tensors(self, scans: list[SupportScan]) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_classes({c: sum(s.label == c for s in scans) for c in self._classes})
        images = self._normalize(torch.stack([s.model_input for s in scans]))
        labels = torch.tensor([self._classes.index(s.label) for s in scans], dtype=torch.int64, device=self.device)
        return images, labels

    def _run_adapt(self, images: torch.Tensor, labels: torch.Tensor) -> AdaptedModel:
        with torch.no_grad():  # every method's test-time adapt runs without a meta-gradient graph
            return self.method.adapt(images, labels)

    def _require_adapted(self) -> _Adapted:
        if self._adapted is None:
            raise NotAdaptedError("diagnose needs an adapted model: call adapt() after adding support scans")
        if self._adapted.version != self._version:
            raise NotAdaptedError("the support set changed since adapt(): call adapt() again before diagnose")
        return self._adapted

    def _saliency_map(self, model: AdaptedModel, x: torch.Tensor, index: int) -> np.ndarray:
        if self._saliency is None:
            self._saliency = SaliencyMapper(self.method.backbone)
        return self._saliency(model, x, index)


def _require_finite(values: torch.Tensor, what: str) -> torch.Tensor:
    """Return ``values`` if every entry is finite, else raise: a broken model must not diagnose."""
    if not bool(torch.isfinite(values).all()):
        raise ModelOutputError(
            f"the model produced non-finite (NaN or infinite) {what}: the checkpoint is broken "
            "(e.g. trained with a diverging learning rate); retrain it or choose another model"
        )
    return values


def _check_label(label: str) -> str:
    if not isinstance(label, str) or not label.strip():
        raise ConfigError(f"a class label must be a non-empty string, got {label!r}")
    return label.strip()
