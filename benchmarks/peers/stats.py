"""Pure helpers of the peer benchmark: medians, ratios, target verdicts and the result tables.

No torch, no peers: the main test suite imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from benchmarks.peers.cases import Case, Target


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (mean of the two middle values for an even count).

    Raises:
        ValueError: ``values`` is empty.
    """
    if not values:
        raise ValueError("median of an empty sequence")
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile ``q`` in ``[0, 1]`` of a non-empty sequence.

    Raises:
        ValueError: ``values`` is empty or ``q`` is outside ``[0, 1]``.
    """
    if not values:
        raise ValueError("quantile of an empty sequence")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must lie in [0, 1], got {q}")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarise_side(times: Sequence[float], peak_rss_mb: float, **extra: Any) -> dict[str, Any]:
    """Summary of one side of one case: median and quartiles of the timed repeats, peak RSS.

    Args:
        times: Seconds of each timed meta-iteration (warm-up excluded).
        peak_rss_mb: Peak resident set size of the side's process, MiB.
        **extra: Further fields kept as they are (library versions, hyperparameters, ...).
    """
    return {
        "median_s": median(times),
        "q1_s": quantile(times, 0.25),
        "q3_s": quantile(times, 0.75),
        "repeats": len(times),
        "times_s": [round(t, 6) for t in times],
        "peak_rss_mb": round(peak_rss_mb, 1),
        **extra,
    }


def ratio(peer: float, medfew: float) -> float:
    """``peer / medfew``: above 1 means medfew takes less (time or memory).

    Raises:
        ValueError: ``medfew`` is not positive.
    """
    if medfew <= 0:
        raise ValueError(f"medfew figure must be positive to form a ratio, got {medfew}")
    return peer / medfew


def case_result(case: Case, peer: dict[str, Any], medfew: dict[str, Any]) -> dict[str, Any]:
    """One row of results: both sides' summaries and the ratios peer / medfew.

    ``time_ratio`` is the ratio of the medians; ``paired_ratio`` the median of the per-round ratios
    (each round times one iteration of each side back to back, so it cancels slow drifts of the load).

    Raises:
        ValueError: The two sides have different numbers of timed repeats.
    """
    if len(peer["times_s"]) != len(medfew["times_s"]):
        raise ValueError(
            f"{case.key}: peer has {len(peer['times_s'])} timed repeats but medfew {len(medfew['times_s'])}"
        )
    paired = [ratio(p, m) for p, m in zip(peer["times_s"], medfew["times_s"], strict=True)]
    return {
        "key": case.key,
        "case": case.to_dict(),
        "peer": peer,
        "medfew": medfew,
        "time_ratio": round(ratio(peer["median_s"], medfew["median_s"]), 3),
        "paired_ratio": round(median(paired), 3),
        "memory_ratio": round(ratio(peer["peak_rss_mb"], medfew["peak_rss_mb"]), 3),
    }


def judge(target: Target, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Whether ``target`` was met by every result it covers.

    Returns:
        ``{"target", "cases", "worst_time_ratio", "worst_memory_ratio", "met"}``; ``met`` is ``None``
        when no result covers the target (not measured).
    """
    covered = [r for r in results if target.covers(Case(**r["case"]))]
    if not covered:
        return {"target": target.label, "cases": [], "worst_time_ratio": None, "worst_memory_ratio": None,
                "met": None}
    worst_time = min(r["time_ratio"] for r in covered)
    worst_memory = min(r["memory_ratio"] for r in covered)
    met = worst_time >= target.min_time_ratio
    if target.min_memory_ratio is not None:
        met = met and worst_memory >= target.min_memory_ratio
    return {
        "target": target.label,
        "cases": [r["key"] for r in covered],
        "worst_time_ratio": worst_time,
        "worst_memory_ratio": worst_memory if target.min_memory_ratio is not None else None,
        "met": met,
    }


def verdict(met: bool | None) -> str:
    """``"met"``, ``"NOT met"`` or ``"not measured"``."""
    return "not measured" if met is None else ("met" if met else "NOT met")


def results_table(results: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown table, one row per case: both medians (with quartiles), ratios, peak RSS."""
    lines = [
        ("| comparison | setting | peer s/iter (q1-q3) | medfew s/iter (q1-q3) | time ratio peer/medfew "
        "| paired ratio | peer peak RSS MiB | medfew peak RSS MiB | memory ratio |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        case, p, m = Case(**r["case"]), r["peer"], r["medfew"]
        lines.append(
            f"| {case.pair} | {case.setting} "
            f"| {p['median_s']:.3f} ({p['q1_s']:.3f}-{p['q3_s']:.3f}) "
            f"| {m['median_s']:.3f} ({m['q1_s']:.3f}-{m['q3_s']:.3f}) "
            f"| **{r['time_ratio']:.2f}x** | {r['paired_ratio']:.2f}x "
            f"| {p['peak_rss_mb']:.0f} | {m['peak_rss_mb']:.0f} | {r['memory_ratio']:.2f} |"
        )
    return lines


def targets_table(verdicts: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown table of the issue's targets and whether each was met."""
    lines = ["| target | worst time ratio | worst memory ratio | verdict |", "|---|---|---|---|"]
    for v in verdicts:
        time_ = "–" if v["worst_time_ratio"] is None else f"{v['worst_time_ratio']:.2f}x"
        memory = "–" if v["worst_memory_ratio"] is None else f"{v['worst_memory_ratio']:.2f}"
        lines.append(f"| {v['target']} | {time_} | {memory} | {verdict(v['met'])} |")
    return lines


def console_table(results: Sequence[dict[str, Any]]) -> list[str]:
    """Fixed-width table for the terminal."""
    head = f"{'comparison':<30} {'setting':<17} {'peer s':>8} {'medfew s':>9} {'ratio':>6} {'paired':>7} " \
           f"{'peer MiB':>9} {'medfew MiB':>11} {'mem':>5}"
    lines = [head, "-" * len(head)]
    for r in results:
        case, p, m = Case(**r["case"]), r["peer"], r["medfew"]
        lines.append(
            f"{case.pair:<30} {case.setting:<17} {p['median_s']:>8.3f} {m['median_s']:>9.3f} "
            f"{r['time_ratio']:>5.2f}x {r['paired_ratio']:>6.2f}x {p['peak_rss_mb']:>9.0f} "
            f"{m['peak_rss_mb']:>11.0f} {r['memory_ratio']:>5.2f}"
        )
    return lines
