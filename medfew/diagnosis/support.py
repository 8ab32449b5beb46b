"""A clinician's support set: the declared classes and the labelled scans, in order, with a version.

:class:`SupportSet` is the bookkeeping behind :class:`~medfew.diagnosis.session.DiagnosisSession`
(which prepares the images and adapts the model); the rule a support set must meet is
:func:`medfew.methods.base.support_shortfall`, the same one the methods apply to label tensors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from medfew.diagnosis.prediction import LeaveOneOutResult
from medfew.errors import ConfigError, SupportSetError
from medfew.methods.base import MIN_CLASSES, MIN_LEAVE_ONE_OUT, support_shortfall

__all__ = ["SupportScan", "SupportSet", "check_label"]


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


def check_label(label: str) -> str:
    """``label`` stripped of surrounding blanks.

    Raises:
        ConfigError: Not a string, or blank.
    """
    if not isinstance(label, str) or not label.strip():
        raise ConfigError(f"a class label must be a non-empty string, got {label!r}")
    return label.strip()


class SupportSet:
    """Declared class names (in order of first declaration or first use) and labelled scans.

    Attributes:
        version: Goes up by one on every change (an adapted model remembers the version it saw).
    """

    def __init__(self) -> None:
        self._scans: list[SupportScan] = []
        self._classes: list[str] = []
        self.version = 0

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in order of first declaration or first use."""
        return tuple(self._classes)

    @property
    def scans(self) -> tuple[SupportScan, ...]:
        """The scans, in insertion order."""
        return tuple(self._scans)

    def counts(self) -> dict[str, int]:
        """Class name -> number of scans (0 for a declared class without scans)."""
        counts = Counter(scan.label for scan in self._scans)
        return {name: counts.get(name, 0) for name in self._classes}

    def add_class(self, name: str) -> None:
        """Declare a class (a no-op when it is declared already)."""
        name = check_label(name)
        if name not in self._classes:
            self._classes.append(name)
            self.version += 1

    def remove_class(self, name: str) -> None:
        """Remove a class and all its scans."""
        if name not in self._classes:
            raise SupportSetError(f"no class {name!r} in the session; classes are {self._classes}")
        self._classes.remove(name)
        self._scans = [scan for scan in self._scans if scan.label != name]
        self.version += 1

    def add(self, label: str, model_input: torch.Tensor, sha256: str) -> int:
        """Add one scan (declaring its class on first use); returns its index."""
        label = check_label(label)
        self._scans.append(SupportScan(label=label, model_input=model_input, sha256=sha256))
        self._declare(label)
        return len(self._scans) - 1

    def remove(self, index: int) -> None:
        """Remove the scan at ``index`` (its class stays declared)."""
        self._scans.pop(self._check_index(index))
        self.version += 1

    def relabel(self, index: int, label: str) -> None:
        """Give the scan at ``index`` another class."""
        index, label = self._check_index(index), check_label(label)
        scan = self._scans[index]
        self._scans[index] = SupportScan(label=label, model_input=scan.model_input, sha256=scan.sha256)
        self._declare(label)

    def check(self) -> dict[str, int]:
        """The counts, if the set can be adapted to.

        Raises:
            SupportSetError: Fewer than :data:`~medfew.methods.base.MIN_CLASSES` classes, or a class
                without scans.
        """
        counts = self.counts()
        too_few, empty = support_shortfall(counts)
        if too_few:
            raise SupportSetError(
                f"a support set needs at least {MIN_CLASSES} classes, got {len(counts)}: {list(counts)}"
            )
        if empty:
            raise SupportSetError(f"class(es) {empty} have no scans; add scans or remove the class")
        return counts

    def check_leave_one_out(self) -> dict[str, int]:
        """The counts, if every scan can be left out and predicted from the others.

        Raises:
            SupportSetError: As :meth:`check`, or a class with fewer than
                :data:`~medfew.methods.base.MIN_LEAVE_ONE_OUT` scans.
        """
        counts = self.check()
        _, small = support_shortfall(counts, per_class=MIN_LEAVE_ONE_OUT)
        if small:
            raise SupportSetError(
                f"leave-one-out needs at least {MIN_LEAVE_ONE_OUT} scans per class; {small} have "
                f"{[counts[c] for c in small]}"
            )
        return counts

    def leave_one_out_result(self, logits: torch.Tensor) -> LeaveOneOutResult:
        """How often ``(S, N)`` leave-one-out logits of the scans pick each scan's own class."""
        counts = self.counts()
        predicted = logits.argmax(dim=1).tolist()
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

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S, C, H, W)`` stacked model inputs (not normalised) and ``(S,)`` int64 class indices on ``device``.

        Raises:
            SupportSetError: As :meth:`check`.
        """
        self.check()
        images = torch.stack([s.model_input for s in self._scans])
        labels = torch.tensor([self._classes.index(s.label) for s in self._scans], dtype=torch.int64, device=device)
        return images, labels

    def _declare(self, label: str) -> None:
        if label not in self._classes:
            self._classes.append(label)
        self.version += 1

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int) or not -len(self._scans) <= index < len(self._scans):
            raise SupportSetError(f"no support scan at index {index!r}; the session holds {len(self._scans)}")
        return index
