"""What a diagnosis session returns: one :class:`Prediction` per query, and the leave-one-out estimate."""

from __future__ import annotations

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
        probabilities: Class name -> softmax probability (sums to 1).
        entropy: Softmax entropy in nats.
        normalized_entropy: ``entropy / log N`` in ``[0, 1]``.
        uncertain: ``normalized_entropy > uncertain_threshold``.
        uncertain_threshold: The threshold used.
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

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable summary (no pixels, no identifiers)."""
        return {
            "prediction": self.predicted,
            "probabilities": dict(self.probabilities),
            "entropy": self.entropy,
            "normalized_entropy": self.normalized_entropy,
            "uncertain": self.uncertain,
            "out_of_distribution": self.out_of_distribution,
            "ood_distance": self.ood_distance,
            "ood_threshold": self.ood_threshold,
        }


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
