"""medfew.evaluation: episodes -> accuracy with 95% CI, AUROC, per-class sensitivity/specificity, calibration.

* ``metrics``: ``episode_metrics(logits, labels) -> EpisodeMetrics`` for one episode.
* ``summary``: ``summarize(list[EpisodeMetrics]) -> EvaluationSummary`` (means, 95% CIs, per class).
* ``baselines``: raw-pixel ``nearest_centroid`` and ``logistic_regression`` with the method contract.
* ``evaluate``: ``evaluate(method, episodes)`` and ``compare(methods, sampler, n_episodes)``.
* ``calibration``: ``fit_temperature(logits, labels) -> T`` (temperature scaling over many episodes).
* ``conformal``: ``ConformalSets`` (prediction sets from leave-one-out scores of the support set, via
  crepes) and ``leave_one_out_logits(method_or_baseline, support_images, support_labels)``.
"""

from medfew.evaluation.baselines import (
    Baseline,
    LogisticRegressionBaseline,
    NearestCentroidBaseline,
    build_baseline,
    list_baselines,
)
from medfew.evaluation.calibration import TEMPERATURE_BOUNDS, fit_temperature, pooled_nll
from medfew.evaluation.conformal import (
    DEFAULT_ALPHA,
    ConformalSets,
    check_alpha,
    leave_one_out_logits,
    leave_one_out_unavailable,
    min_support_for,
)
from medfew.evaluation.evaluate import compare, evaluate, method_temperature, query_logits, run_episode
from medfew.evaluation.metrics import (
    UNCERTAIN_THRESHOLD,
    EpisodeMetrics,
    episode_metrics,
    expected_calibration_error,
    normalized_entropy,
)
from medfew.evaluation.summary import (
    ClassStat,
    EvaluationSummary,
    MetricStat,
    confidence_interval_95,
    summarize,
)

__all__ = [
    "DEFAULT_ALPHA",
    "TEMPERATURE_BOUNDS",
    "UNCERTAIN_THRESHOLD",
    "Baseline",
    "ClassStat",
    "ConformalSets",
    "EpisodeMetrics",
    "EvaluationSummary",
    "LogisticRegressionBaseline",
    "MetricStat",
    "NearestCentroidBaseline",
    "build_baseline",
    "check_alpha",
    "compare",
    "confidence_interval_95",
    "episode_metrics",
    "evaluate",
    "expected_calibration_error",
    "fit_temperature",
    "leave_one_out_logits",
    "leave_one_out_unavailable",
    "list_baselines",
    "method_temperature",
    "min_support_for",
    "normalized_entropy",
    "pooled_nll",
    "query_logits",
    "run_episode",
    "summarize",
]
