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

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfew.data.preprocessing import Preprocessing
from medfew.data.readers import Window
from medfew.diagnosis.adapted import AdaptedState, require_finite
from medfew.diagnosis.inputs import ImageInput, LoadedImage, load_input
from medfew.diagnosis.prediction import LeaveOneOutResult, Prediction
from medfew.diagnosis.saliency import SALIENCY_CAVEAT, SaliencyMapper
from medfew.diagnosis.support import SupportScan, SupportSet, check_label
from medfew.diagnosis.uncertainty import (
    OOD_FACTOR,
    UNCERTAIN_THRESHOLD,
    check_threshold,
    entropy_flags,
)
from medfew.errors import NotAdaptedError
from medfew.evaluation.calibration import check_temperature
from medfew.evaluation.conformal import (
    DEFAULT_ALPHA,
    Progress,
    check_alpha,
    leave_one_out_logits,
    leave_one_out_unavailable,
)
from medfew.methods.base import AdaptedModel, FewShotMethod
from medfew.methods.gradient_based import reporting_inner_steps
from medfew.training.checkpoint import CheckpointInfo, load_checkpoint


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
        self._support = SupportSet()
        self._adapted: AdaptedState | None = None
        self._saliency: SaliencyMapper | None = None

    @property
    def temperature(self) -> float:
        """The model's logit temperature ``T``: probabilities are ``softmax(logits / T)``."""
        return check_temperature(getattr(self.method, "temperature", 1.0), "the model's temperature")

    # ------------------------------------------------------------------ support set
    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in order of first declaration or first use."""
        return self._support.classes

    @property
    def support(self) -> tuple[SupportScan, ...]:
        """The support scans, in insertion order (indices used by ``remove_support`` / ``relabel_support``)."""
        return self._support.scans

    def support_counts(self) -> dict[str, int]:
        """Class name -> number of support scans (0 for a declared class without scans)."""
        return self._support.counts()

    def add_class(self, name: str) -> None:
        """Declare a class (it must get at least one scan before ``adapt``)."""
        self._support.add_class(name)

    def remove_class(self, name: str) -> None:
        """Remove a class and all its scans."""
        self._support.remove_class(name)

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
        label = check_label(label)  # before reading the image, so a bad label is reported first
        loaded = load_input(image, name, window=window)
        return self._support.add(label, self._model_input(loaded), loaded.sha256)

    def remove_support(self, index: int) -> None:
        """Remove the scan at ``index`` (its class stays declared)."""
        self._support.remove(index)

    def relabel_support(self, index: int, label: str) -> None:
        """Give the scan at ``index`` another class."""
        self._support.relabel(index, label)

    # ------------------------------------------------------------------ adapt / diagnose
    @property
    def is_adapted(self) -> bool:
        """Whether ``adapt`` ran on the current support set."""
        return self._adapted is not None and self._adapted.version == self._support.version

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
        images, labels = self._support_tensors()
        with reporting_inner_steps(self.method, inner_progress):
            model = self._run_adapt(images, labels)
        adapted = AdaptedState.fit(model, images, labels, len(self.class_names), version=self._support.version,
                                   ood_factor=self.ood_factor)
        reason = ("prediction sets are off in this session" if self.alpha is None
                  else leave_one_out_unavailable(labels, self.class_names))
        if reason is not None:
            adapted = adapted.with_note(reason)
        else:
            loo = leave_one_out_logits(self.method, images, labels, progress=progress)
            adapted = adapted.with_sets(loo, labels, self.alpha, self.temperature)
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
            logits = require_finite(adapted.model.predict(x), f"scores of {name or 'the query'}")
            probabilities = torch.softmax(logits.double() / temperature, dim=-1)[0].cpu()
            features = adapted.model.embed(x) if adapted.reference is not None else None
        index, classes = int(probabilities.argmax()), self.class_names
        entropy, normalized, uncertain = entropy_flags(probabilities, self.uncertain_threshold)
        members: tuple[str, ...] | None = None
        if adapted.sets is not None:
            inside = adapted.sets.predict(probabilities[None].numpy())[0]
            order = np.argsort(-probabilities.numpy(), kind="stable")
            members = tuple(classes[i] for i in order if inside[i])
            uncertain = len(members) != 1
        distance = threshold = outlier = None
        if adapted.reference is not None and features is not None:
            distance = float(adapted.reference.distance(features)[0])
            threshold = adapted.reference.threshold
            outlier = distance > threshold
        return Prediction(
            predicted=classes[index],
            predicted_index=index,
            class_names=classes,
            probabilities={c: float(p) for c, p in zip(classes, probabilities.tolist())},
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
        self._support.check_leave_one_out()
        ready = self.is_adapted and self._adapted is not None and self._adapted.loo_logits is not None
        self.adapt(progress)
        adapted = self._require_adapted()
        if adapted.loo_logits is None:  # sets are off: the scores were not needed until now
            images, labels = self._support_tensors()
            loo = leave_one_out_logits(self.method, images, labels, progress=progress)
            adapted = self._adapted = adapted.with_scores(loo)
        elif ready and progress is not None:
            progress(len(self.support), len(self.support))
        return self._support.leave_one_out_result(adapted.loo_logits)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ internals
    def _model_input(self, loaded: LoadedImage) -> torch.Tensor:
        return self.preprocessing.prepare(loaded.pixels)

    def _normalize(self, batch: torch.Tensor) -> torch.Tensor:
        return self.preprocessing.normalize_batch(batch.to(self.device))

    def _support_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self._support.tensors(self.device)
        return self._normalize(images), labels

    def _run_adapt(self, images: torch.Tensor, labels: torch.Tensor) -> AdaptedModel:
        with torch.no_grad():  # every method's test-time adapt runs without a meta-gradient graph
            return self.method.adapt(images, labels)

    def _require_adapted(self) -> AdaptedState:
        if self._adapted is None:
            raise NotAdaptedError("diagnose needs an adapted model: call adapt() after adding support scans")
        if self._adapted.version != self._support.version:
            raise NotAdaptedError("the support set changed since adapt(): call adapt() again before diagnose")
        return self._adapted

    def _saliency_map(self, model: AdaptedModel, x: torch.Tensor, index: int) -> np.ndarray:
        if self._saliency is None:
            self._saliency = SaliencyMapper(self.method.backbone)
        return self._saliency(model, x, index)
