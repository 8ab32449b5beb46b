"""What a session computes once per version of its support set: the adapted model, the support
features' distance reference, and the leave-one-out scores with the conformal sets fitted on them.
A broken model (non-finite scores or features) is refused here, before it can diagnose anything."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from medfew.diagnosis.uncertainty import DistanceReference
from medfew.errors import ModelOutputError
from medfew.evaluation.conformal import ConformalSets, min_support_for
from medfew.methods.base import AdaptedModel


@dataclass(frozen=True)
class AdaptedState:
    """The model adapted to one version of the support set, and what was computed with it.

    Attributes:
        model: The adapted model.
        reference: Distance reference of the support features (``None`` for models without features).
        version: The support set's version it was adapted to.
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

    @classmethod
    def fit(
        cls, model: AdaptedModel, images: torch.Tensor, labels: torch.Tensor, n_classes: int, *,
        version: int, ood_factor: float,
    ) -> AdaptedState:
        """Check the adapted model on its own support set and fit the distance reference.

        Args:
            model: The model adapted to ``(images, labels)``.
            images: ``(S, C, H, W)`` normalised support images.
            labels: ``(S,)`` int64 in ``[0, N)``.
            n_classes: ``N``.
            version: The support set's version.
            ood_factor: Multiple of the reference radius beyond which a query is out of distribution.

        Raises:
            ModelOutputError: Non-finite scores or features of the support scans.
        """
        with torch.no_grad():
            features = model.embed(images)
            require_finite(model.predict(images), "scores of the support scans")
        if features is None:
            return cls(model=model, reference=None, version=version)
        require_finite(features, "features of the support scans")
        return cls(model=model, reference=DistanceReference.fit(features, labels, n_classes, factor=ood_factor),
                   version=version)

    def with_note(self, note: str) -> AdaptedState:
        """This state, with ``note`` saying why there are no prediction sets."""
        return dataclasses.replace(self, set_note=note)

    def with_scores(self, loo: torch.Tensor) -> AdaptedState:
        """This state with the leave-one-out logits ``(S, N)`` (no sets fitted on them)."""
        return dataclasses.replace(self, loo_logits=require_finite(loo, "leave-one-out scores of the support scans"))

    def with_sets(self, loo: torch.Tensor, labels: torch.Tensor, alpha: float, temperature: float) -> AdaptedState:
        """This state with the leave-one-out logits ``(S, N)`` and the level-``alpha`` conformal sets
        fitted on their calibrated probabilities ``softmax(loo / temperature)``."""
        state = self.with_scores(loo)
        probabilities = torch.softmax(loo.double() / temperature, dim=-1).cpu()
        sets = ConformalSets.fit(probabilities, labels.cpu(), alpha)
        note = None
        if sets.always_full:
            note = (f"with {sets.n_calibration} support scans a {100 * sets.confidence:g}% set must hold every class; "
                    f"{min_support_for(alpha)} or more scans in all can narrow it")
        return dataclasses.replace(state, sets=sets, set_note=note)


def require_finite(values: torch.Tensor, what: str) -> torch.Tensor:
    """Return ``values`` if every entry is finite, else raise: a broken model must not diagnose.

    Raises:
        ModelOutputError: A NaN or infinite entry (the message names ``what``).
    """
    if not bool(torch.isfinite(values).all()):
        raise ModelOutputError(
            f"the model produced non-finite (NaN or infinite) {what}: the checkpoint is broken "
            "(e.g. trained with a diverging learning rate); retrain it or choose another model"
        )
    return values
