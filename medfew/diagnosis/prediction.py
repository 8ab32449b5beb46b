"""What a diagnosis session returns: one :class:`Prediction` per query, and the leave-one-out estimate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medfew.data.readers import DicomMetadata


@dataclass(frozen=True)
class Prediction:
    """The diagnosis of one query scan.

    Attributes:
        predicted: Predicted class name (arg-max of ``probabilities``).
        predicted_index: Its index in ``class_names``.
        class_names: ``(N,)`` class names, in the session's class order.
        probabilities: Class name -> calibrated probability ``softmax(logits / temperature)`` (sums to 1).
        entropy: Entropy of ``probabilities`` in nats.
        normalized_entropy: ``entropy / log N`` in ``[0, 1]``.
        uncertain: When there is a prediction set, whether it holds other than exactly one class
            (several: the model cannot tell them apart; none: no class fits); otherwise
            ``normalized_entropy > uncertain_threshold``. ``uncertain_rule`` says which.
        uncertain_threshold: The entropy threshold (used when there is no set).
        ood_distance: Distance of the query to the nearest support class mean in the model's
            ``embed`` space; ``None`` when the method has no ``embed``.
        ood_threshold: Distance beyond which the query is out of distribution, or ``None``.
        out_of_distribution: ``ood_distance > ood_threshold``; ``None`` when not computable.
        saliency: float32 ``(S, S)`` Grad-CAM map in ``[0, 1]`` over ``model_input`` for the
            predicted class, or ``None`` when saliency was not asked for.
        saliency_caveat: Always shown with the saliency map.
        image: float32 ``(C, H, W)`` in ``[0, 1]``, the decoded query as read.
        model_input: float32 ``(C, S, S)`` in ``[0, 1]``, the query resized and padded for the model
            (before normalisation); ``saliency`` is aligned with it.
        image_sha256: sha256 of ``image``'s pixels.
        dicom: The query's DICOM header, when it was a DICOM file (identifiers hidden from repr).
        prediction_set: Classes of the conformal prediction set, most probable first (possibly
            empty), or ``None`` when the session has no set (see ``set_note``).
        set_confidence: ``1 - alpha``: the share of cases the set aims to hold the true class in,
            or ``None`` without a set.
        set_note: Why there is no set, or why the set must hold every class (too few support scans
            for the level); ``None`` otherwise.
        temperature: The logit temperature the probabilities were divided by (1.0: uncalibrated).
        uncertain_rule: ``"set"`` or ``"entropy"``: the rule behind ``uncertain``.
    """

    predicted: str
    predicted_index: int
    class_names: tuple[str, ...]
    probabilities: dict[str, float]
    entropy: float
    normalized_entropy: float
    uncertain: bool
    uncertain_threshold: float
    ood_distance: float | None
    ood_threshold: float | None
    out_of_distribution: bool | None
    saliency: np.ndarray | None
    saliency_caveat: str
    image: np.ndarray = field(repr=False)
    model_input: np.ndarray = field(repr=False)
    image_sha256: str = ""
    dicom: DicomMetadata | None = None
    prediction_set: tuple[str, ...] | None = None
    set_confidence: float | None = None
    set_note: str | None = None
    temperature: float = 1.0
    uncertain_rule: str = "entropy"

    @property
    def set_statement(self) -> str:
        """The prediction set in words, with what it promises (see :func:`describe_set`)."""
        return describe_set(self.prediction_set, self.set_confidence, self.set_note)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable summary (no pixels, no identifiers)."""
        return {
            "prediction": self.predicted,
            "probabilities": dict(self.probabilities),
            "temperature": self.temperature,
            "prediction_set": None if self.prediction_set is None else list(self.prediction_set),
            "set_confidence": self.set_confidence,
            "set_note": self.set_note,
            "set_statement": self.set_statement,
            "entropy": self.entropy,
            "normalized_entropy": self.normalized_entropy,
            "uncertain": self.uncertain,
            "uncertain_rule": self.uncertain_rule,
            "out_of_distribution": self.out_of_distribution,
            "ood_distance": self.ood_distance,
            "ood_threshold": self.ood_threshold,
        }


def join_classes(names: Sequence[str]) -> str:
    """``("a",) -> "a"``, ``("a", "b") -> "a or b"``, ``("a", "b", "c") -> "a, b or c"``."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def describe_set(prediction_set: Sequence[str] | None, confidence: float | None, note: str | None) -> str:
    """One sentence for a clinician: the set and its coverage statement, or why there is none.

    Args:
        prediction_set: Classes in the set (most probable first), or ``None``.
        confidence: ``1 - alpha``, or ``None`` without a set.
        note: :attr:`Prediction.set_note`.

    Example:
        ``"glioma or meningioma — the true class is in this set in at least 90% of cases if the
        support scans are representative (exchangeable), estimated by leave-one-out"``.
    """
    if prediction_set is None or confidence is None:
        return "No prediction set" + (f": {note}" if note else "")
    level = f"{100 * confidence:g}%"
    if not prediction_set:
        text = (f"empty set — no class fits this scan at the {level} level (it may show something none of "
                "the classes covers)")
    else:
        text = (f"{join_classes(prediction_set)} — the true class is in this set in at least {level} of cases "
                "if the support scans are representative (exchangeable), estimated by leave-one-out")
    return text + (f" ({note})" if note else "")


WEAK_SUPPORT_ACCURACY = 0.7
"""Below this leave-one-out accuracy a support set is called weak (a rule of thumb, shown as a warning)."""


@dataclass(frozen=True)
class LeaveOneOutResult:
    """Accuracy of predicting each support scan from all the others.

    Attributes:
        accuracy: ``correct / total``.
        correct: Support scans predicted as their own label.
        total: Support scans.
        per_class: Class name -> accuracy over that class's scans.
    """

    accuracy: float
    correct: int
    total: int
    per_class: dict[str, float]

    @property
    def is_weak(self) -> bool:
        """Whether fewer than :data:`WEAK_SUPPORT_ACCURACY` of the support scans are recognised."""
        return self.accuracy < WEAK_SUPPORT_ACCURACY

    @property
    def warning(self) -> str | None:
        """What a weak support set means and what to do about it, or ``None`` when it is not weak."""
        if not self.is_weak:
            return None
        chance = 1.0 / max(len(self.per_class), 1)
        worst = min(self.per_class, key=lambda name: self.per_class[name]) if self.per_class else None
        hardest = f" (hardest: '{worst}', {self.per_class[worst]:.0%})" if worst is not None else ""
        return (
            f"Weak support set: only {self.accuracy:.0%} of the support scans ({self.correct} of {self.total}) "
            f"are recognised from the others (chance: {chance:.0%}){hardest}. Diagnoses based on it are "
            "unreliable. Add more scans to each class, check their labels, or merge classes that look alike."
        )
