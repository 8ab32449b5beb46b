"""medfew.evaluation: episodes -> accuracy with 95% CI, AUROC, per-class sensitivity/specificity, calibration.

* ``metrics``: ``episode_metrics(logits, labels) -> EpisodeMetrics`` for one episode.
* ``summary``: ``summarize(list[EpisodeMetrics]) -> EvaluationSummary`` (means, 95% CIs, per class).
* ``baselines``: raw-pixel ``nearest_centroid`` and ``logistic_regression`` with the method contract.
* ``evaluate``: ``evaluate(method, episodes)`` and ``compare(methods, sampler, n_episodes)``.
"""

from medfew.evaluation.baselines import (
    Baseline,
    LogisticRegressionBaseline,
    NearestCentroidBaseline,
    build_baseline,
    list_baselines,
)
from medfew.evaluation.evaluate import compare, evaluate, run_episode
from medfew.evaluation.metrics import EpisodeMetrics, episode_metrics, expected_calibration_error
from medfew.evaluation.summary import (
    ClassStat,
    EvaluationSummary,
    MetricStat,
    confidence_interval_95,
    summarize,
)

__all__ = [
    "Baseline",
    "ClassStat",
    "EpisodeMetrics",
    "EvaluationSummary",
    "LogisticRegressionBaseline",
    "MetricStat",
    "NearestCentroidBaseline",
    "build_baseline",
    "compare",
    "confidence_interval_95",
    "episode_metrics",
    "evaluate",
    "expected_calibration_error",
    "list_baselines",
    "run_episode",
    "summarize",
]
