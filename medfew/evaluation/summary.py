"""Aggregate ``EpisodeMetrics`` over many episodes into an ``EvaluationSummary`` with 95% CIs.

The 95% confidence interval of a mean over episodes is the usual few-shot one,
``1.96 * std(values, ddof=1) / sqrt(n)``: the **sample** standard deviation (``ddof=1``, the unbiased
variance estimate) of the per-episode values over the square root of the number of episodes. It is
``NaN`` for fewer than 2 episodes. Metrics that can be undefined for an episode (AUROC, per-class
sensitivity/specificity) are averaged over the episodes where they are defined, and ``n`` counts only
those episodes: conformal coverage and set size over the episodes that had prediction sets, selective
accuracy over the episodes with at least one unflagged query.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfew.errors import EpisodeError
from medfew.evaluation.metrics import (
    ECE_BINS,
    UNCERTAIN_THRESHOLD,
    EpisodeMetrics,
    expected_calibration_error,
)

CI_Z = 1.96
CI_DDOF = 1


def confidence_interval_95(values: Sequence[float] | np.ndarray) -> float:
    """Half-width ``1.96 * std(values, ddof=1) / sqrt(n)`` of the 95% CI of the mean; ``NaN`` if ``n < 2``."""
    array = np.asarray(values, dtype=np.float64)
    if array.size < 2:
        return math.nan
    return float(CI_Z * array.std(ddof=CI_DDOF) / math.sqrt(array.size))


@dataclass(frozen=True)
class MetricStat:
    """Mean of one metric over episodes.

    Attributes:
        mean: Mean over the episodes where the metric is defined (``NaN`` if none).
        ci95: Half-width of the 95% CI of that mean (``NaN`` if fewer than 2 such episodes).
        n: Number of episodes where the metric is defined.
    """

    mean: float
    ci95: float
    n: int

    @staticmethod
    def of(values: Sequence[float]) -> MetricStat:
        """Summarise per-episode values, skipping ``NaN``."""
        array = np.asarray(values, dtype=np.float64)
        finite = array[~np.isnan(array)]
        mean = float(finite.mean()) if finite.size else math.nan
        return MetricStat(mean=mean, ci95=confidence_interval_95(finite), n=int(finite.size))


@dataclass(frozen=True)
class ClassStat:
    """Mean sensitivity and specificity of one class over the episodes that contain it.

    Attributes:
        sensitivity: Mean recall over the episodes where it is defined (the class is in the query).
        specificity: Mean specificity over the episodes where it is defined.
        n_episodes: Number of episodes in which the class took part.
    """

    sensitivity: float
    specificity: float
    n_episodes: int


@dataclass(frozen=True)
class EvaluationSummary:
    """What an evaluation reports.

    Attributes:
        method: Name of the evaluated method or baseline.
        n_episodes: Number of episodes.
        ways: Classes per episode, or ``None`` if it varies.
        shots: Support images per class, or ``None`` if it varies or is unknown.
        queries: Query images per class, or ``None`` if it varies (including unbalanced queries).
        queries_requested: The query count the episodes asked for (small classes may have had fewer).
        accuracy: Episode accuracy, mean and 95% CI.
        balanced_accuracy: Episode balanced accuracy, mean and 95% CI.
        auroc: Episode macro AUROC, mean and 95% CI over episodes where it is defined.
        nll: Mean episode NLL.
        brier: Mean episode Brier score.
        ece: Mean episode ECE (per-episode bins; biased upwards for small query sets).
        ece_pooled: ECE of all queries of all episodes pooled into one set of bins.
        per_class: Sensitivity/specificity per class, keyed by class name when every episode carries
            names, else by position (``"0"``, ``"1"``, ...).
        per_class_key: ``"name"`` or ``"position"``.
        episodes: The per-episode metrics, in evaluation order.
        temperature: The logit temperature ``T`` the scores were divided by (``NaN`` if it varied).
        ece_uncalibrated: Mean episode ECE of ``softmax(logits)`` before dividing by ``T``.
        ece_uncalibrated_pooled: Pooled ECE before dividing by ``T``.
        conformal_alpha: Level of the prediction sets, or ``None`` when no episode had sets.
        coverage: Share of queries whose true class is in their set, over the episodes with sets.
        set_size: Mean prediction-set size, over the episodes with sets.
        flagged_share: Share of queries flagged uncertain (set size other than 1, or the entropy rule
            in episodes without sets).
        selective_accuracy: Accuracy of the unflagged queries, over episodes with any.
        flag_rules: The flag rules used (``"set"``, ``"entropy"``), sorted.
        provenance: What reproduces the figure: medfew version, seed, checkpoint and its checksum (or
            the baseline), the data source and its checksums, and the unreadable files skipped.
    """

    method: str
    n_episodes: int
    ways: int | None
    shots: int | None
    queries: int | None
    accuracy: MetricStat
    balanced_accuracy: MetricStat
    auroc: MetricStat
    nll: float
    brier: float
    ece: float
    ece_pooled: float
    per_class: dict[str, ClassStat]
    per_class_key: str
    episodes: tuple[EpisodeMetrics, ...] = field(repr=False, default=())
    queries_requested: int | None = None
    temperature: float = 1.0
    ece_uncalibrated: float = math.nan
    ece_uncalibrated_pooled: float = math.nan
    conformal_alpha: float | None = None
    coverage: MetricStat = MetricStat(math.nan, math.nan, 0)
    set_size: MetricStat = MetricStat(math.nan, math.nan, 0)
    flagged_share: MetricStat = MetricStat(math.nan, math.nan, 0)
    selective_accuracy: MetricStat = MetricStat(math.nan, math.nan, 0)
    flag_rules: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (non-finite floats become ``None``); per-episode accuracies included."""
        out: dict[str, Any] = {
            "method": self.method,
            "n_episodes": self.n_episodes,
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "queries_requested": self.queries_requested,
        }
        for key in ("accuracy", "balanced_accuracy", "auroc", "coverage", "set_size", "flagged_share",
                    "selective_accuracy"):
            stat: MetricStat = getattr(self, key)
            out[f"{key}_mean"] = _json_float(stat.mean)
            out[f"{key}_ci95"] = _json_float(stat.ci95)
            out[f"{key}_n_episodes"] = stat.n
        out.update(
            nll_mean=_json_float(self.nll),
            brier_mean=_json_float(self.brier),
            ece_mean=_json_float(self.ece),
            ece_pooled=_json_float(self.ece_pooled),
            ece_uncalibrated_mean=_json_float(self.ece_uncalibrated),
            ece_uncalibrated_pooled=_json_float(self.ece_uncalibrated_pooled),
            ece_bins=ECE_BINS,
            temperature=_json_float(self.temperature),
            conformal_alpha=self.conformal_alpha,
            conformal_confidence=None if self.conformal_alpha is None else 1.0 - self.conformal_alpha,
            flag_rule=self._flag_rule_text(),
            ci_method=f"{CI_Z} * std(ddof={CI_DDOF}) / sqrt(n_episodes)",
            per_class_key=self.per_class_key,
            per_class={
                name: {
                    "sensitivity": _json_float(s.sensitivity),
                    "specificity": _json_float(s.specificity),
                    "n_episodes": s.n_episodes,
                }
                for name, s in self.per_class.items()
            },
            episode_accuracies=[float(e.accuracy) for e in self.episodes],
            provenance=self.provenance,
        )
        return out

    def format_text(self) -> str:
        """A readable plain-text table of the summary."""
        setting = " ".join(
            f"{value}-{label}"
            for value, label in ((self.ways, "way"), (self.shots, "shot"), (self.queries, "query"))
            if value is not None
        )
        lines = [
            f"method: {self.method or '?'}   episodes: {self.n_episodes}" + (f"   ({setting})" if setting else ""),
            f"{'metric':<24}{'mean':>9}{'95% CI':>11}{'episodes':>10}",
        ]
        for label, stat in (
            ("accuracy", self.accuracy),
            ("balanced accuracy", self.balanced_accuracy),
            ("AUROC (macro OvR)", self.auroc),
        ):
            lines.append(f"{label:<24}{_fmt(stat.mean):>9}{'± ' + _fmt(stat.ci95):>11}{stat.n:>10}")
        for label, value in (
            ("NLL", self.nll),
            ("Brier (0..2)", self.brier),
            (f"ECE ({ECE_BINS} bins, mean)", self.ece),
            (f"ECE ({ECE_BINS} bins, pooled)", self.ece_pooled),
            ("ECE uncalibrated mean", self.ece_uncalibrated),
            ("ECE uncalibrated pooled", self.ece_uncalibrated_pooled),
        ):
            lines.append(f"{label:<24}{_fmt(value):>9}{'':>11}{self.n_episodes:>10}")
        lines.append(f"temperature T = {_fmt(self.temperature)} (scores are softmax(logits / T); 1 = uncalibrated)")
        lines.append("")
        if self.conformal_alpha is None:
            lines.append("prediction sets: none (off, or a class with a single support image in every episode)")
        else:
            lines.append(
                f"prediction sets: alpha {self.conformal_alpha:g} (aim: true class in the set in >= "
                f"{100 * (1 - self.conformal_alpha):g}% of queries), leave-one-out on each support set"
            )
        lines.append(f"a query is flagged uncertain when {self._flag_rule_text()}")
        for label, stat in (
            ("coverage", self.coverage),
            ("mean set size", self.set_size),
            ("flagged uncertain", self.flagged_share),
            ("selective accuracy", self.selective_accuracy),
        ):
            lines.append(f"{label:<24}{_fmt(stat.mean):>9}{'± ' + _fmt(stat.ci95):>11}{stat.n:>10}")
        if self.per_class:
            lines.append("")
            header = f"class (by {self.per_class_key})"
            lines.append(f"{header:<24}{'sensitivity':>12}{'specificity':>12}{'episodes':>10}")
            for name, stat in self.per_class.items():
                sens, spec = _fmt(stat.sensitivity), _fmt(stat.specificity)
                lines.append(f"{name[:23]:<24}{sens:>12}{spec:>12}{stat.n_episodes:>10}")
        skipped = self.provenance.get("skipped") or []
        if skipped:
            lines.append("")
            lines.append(f"{len(skipped)} unreadable file(s) skipped:")
            lines.extend(f"  {item['path']}: {item['reason']}" for item in skipped)
        return "\n".join(lines)


    def _flag_rule_text(self) -> str:
        entropy = f"normalised entropy of the calibrated probabilities > {UNCERTAIN_THRESHOLD}"
        rules = {"set": "the prediction set does not hold exactly one class", "entropy": entropy}
        if self.flag_rules == ("entropy", "set"):
            return f"{rules['set']} ({entropy} in episodes without sets)"
        return " / ".join(rules[r] for r in self.flag_rules) or entropy


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _fmt(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "n/a"


def _common(values: Sequence[int | None]) -> int | None:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def _queries_per_class(metrics: EpisodeMetrics) -> int | None:
    counts = set(metrics.query_counts)
    return counts.pop() if len(counts) == 1 else None


def _per_class(episodes: Sequence[EpisodeMetrics]) -> tuple[dict[str, ClassStat], str]:
    by_name = all(e.class_names is not None for e in episodes)
    key_kind = "name" if by_name else "position"
    sens: dict[str, list[float]] = {}
    spec: dict[str, list[float]] = {}
    for e in episodes:
        keys = e.class_names if by_name else tuple(str(i) for i in range(e.ways))
        for key, s, p in zip(keys, e.sensitivity, e.specificity):  # type: ignore[arg-type]
            sens.setdefault(key, []).append(s)
            spec.setdefault(key, []).append(p)
    stats = {
        key: ClassStat(
            sensitivity=MetricStat.of(sens[key]).mean,
            specificity=MetricStat.of(spec[key]).mean,
            n_episodes=len(sens[key]),
        )
        for key in sens
    }
    return stats, key_kind


def summarize(episodes: Sequence[EpisodeMetrics], *, method: str = "") -> EvaluationSummary:
    """Aggregate per-episode metrics.

    Per-class sensitivity/specificity are keyed by class name when every episode carries class names
    (then each class is averaged over the episodes it appears in, whatever its position, so this also
    works when episodes draw different subsets of a larger class pool); otherwise by label position.

    Args:
        episodes: Metrics of each episode (at least one).
        method: Name of the evaluated method, stored in the summary.

    Returns:
        The ``EvaluationSummary``.

    Raises:
        EpisodeError: ``episodes`` is empty or holds something other than ``EpisodeMetrics``.
    """
    episodes = tuple(episodes)
    if not episodes:
        raise EpisodeError(f"cannot summarise an evaluation of method {method!r} with no episodes")
    wrong = sorted({type(e).__name__ for e in episodes if not isinstance(e, EpisodeMetrics)})
    if wrong:
        raise EpisodeError(f"summarize expects EpisodeMetrics, got {wrong}")
    per_class, key_kind = _per_class(episodes)
    with_sets = [e for e in episodes if e.conformal_alpha is not None]
    temperatures = {e.temperature for e in episodes}
    alphas = {e.conformal_alpha for e in with_sets}
    correct = np.concatenate([e.correct for e in episodes])
    raw_confidence = [e.confidence_uncalibrated for e in episodes]
    return EvaluationSummary(
        method=method,
        n_episodes=len(episodes),
        ways=_common([e.ways for e in episodes]),
        shots=_common([e.shots for e in episodes]),
        queries=_common([_queries_per_class(e) for e in episodes]),
        accuracy=MetricStat.of([e.accuracy for e in episodes]),
        balanced_accuracy=MetricStat.of([e.balanced_accuracy for e in episodes]),
        auroc=MetricStat.of([e.auroc for e in episodes]),
        nll=float(np.mean([e.nll for e in episodes])),
        brier=float(np.mean([e.brier for e in episodes])),
        ece=float(np.mean([e.ece for e in episodes])),
        ece_pooled=expected_calibration_error(
            np.concatenate([e.confidence for e in episodes]), np.concatenate([e.correct for e in episodes])
        ),
        per_class=per_class,
        per_class_key=key_kind,
        episodes=episodes,
        temperature=temperatures.pop() if len(temperatures) == 1 else math.nan,
        ece_uncalibrated=float(np.mean([e.ece_uncalibrated for e in episodes])),
        ece_uncalibrated_pooled=(
            math.nan if any(c is None for c in raw_confidence)
            else expected_calibration_error(np.concatenate(raw_confidence), correct)  # type: ignore[arg-type]
        ),
        conformal_alpha=alphas.pop() if len(alphas) == 1 else None,
        coverage=MetricStat.of([e.coverage for e in with_sets]),
        set_size=MetricStat.of([e.set_size for e in with_sets]),
        flagged_share=MetricStat.of([e.flagged_share for e in episodes]),
        selective_accuracy=MetricStat.of([e.selective_accuracy for e in episodes]),
        flag_rules=tuple(sorted({e.flag_rule for e in episodes if e.flagged is not None})),
    )
