"""The peer benchmark's own code (benchmarks/peers), without any peer installed.

The peers (learn2learn, higher, easyfsl) live only in .venv-bench; nothing here imports them. Speeds are
not asserted: these tests check the statistics, the case list, the verdicts, the generated docs block,
that the peers' Conv4 is the same network as medfew's, and the worker protocol on medfew-only sides.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.peers.cases import (
    PAIRS,
    TARGETS,
    Case,
    Target,
    build_cases,
    select_cases,
)
from benchmarks.peers.conv4 import PlainConv4
from benchmarks.peers.render import BEGIN, END, render_block, replace_block
from benchmarks.peers.stats import (
    case_result,
    console_table,
    judge,
    median,
    quantile,
    ratio,
    results_table,
    summarise_side,
    targets_table,
    verdict,
)


def _case(peer: str = "learn2learn:maml", steps: int = 5, shots: int = 5) -> Case:
    return Case("learn2learn MAML (2nd order)", peer, "medfew:maml", shots, steps, 4)


def _row(case: Case, peer_times: list[float], medfew_times: list[float], peer_mb: float = 1000.0,
         medfew_mb: float = 900.0) -> dict:
    return case_result(case, summarise_side(peer_times, peer_mb), summarise_side(medfew_times, medfew_mb))


# ------------------------------------------------------------------ statistics


def test_median_odd_even_and_unsorted() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert median([7.0]) == 7.0


def test_median_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="median of an empty sequence"):
        median([])


def test_quantile_interpolates_and_validates() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert quantile(values, 0.0) == 1.0
    assert quantile(values, 1.0) == 5.0
    assert quantile(values, 0.25) == 2.0
    assert quantile([1.0, 2.0], 0.5) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="quantile of an empty sequence"):
        quantile([], 0.5)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got 1.5"):
        quantile(values, 1.5)


def test_ratio_refuses_non_positive_medfew() -> None:
    assert ratio(3.0, 1.5) == 2.0
    with pytest.raises(ValueError, match="must be positive to form a ratio, got 0"):
        ratio(1.0, 0.0)


def test_case_result_ratios_of_medians_and_pairs() -> None:
    # peer medians 2.0, medfew 0.5 -> 4x; per-round ratios 3, 4, 10 -> paired median 4
    row = _row(_case(), [1.5, 2.0, 5.0], [0.5, 0.5, 0.5], peer_mb=1200.0, medfew_mb=1000.0)
    assert row["time_ratio"] == 4.0
    assert row["paired_ratio"] == 4.0
    assert row["memory_ratio"] == 1.2
    assert row["peer"]["repeats"] == 3 and row["peer"]["q1_s"] == 1.75
    assert row["key"] == "learn2learn:maml|5-shot|5-steps|mb4"


def test_case_result_refuses_unequal_repeats() -> None:
    with pytest.raises(ValueError, match="peer has 2 timed repeats but medfew 1"):
        _row(_case(), [1.0, 1.0], [1.0])


# ------------------------------------------------------------------ cases and targets


def test_cases_cover_every_pair_shot_and_step_once() -> None:
    cases = build_cases()
    gradient = [p for p in PAIRS if p.gradient_based]
    assert len(cases) == len(gradient) * 2 * 2 + (len(PAIRS) - len(gradient)) * 2
    assert len({c.key for c in cases}) == len(cases)
    assert {c.meta_batch for c in cases if c.inner_steps} == {4}
    assert {c.meta_batch for c in cases if not c.inner_steps} == {1}
    assert {(c.ways, c.queries) for c in cases} == {(5, 15)}
    assert all(c.medfew.startswith("medfew:") for c in cases)


def test_case_setting_text() -> None:
    assert _case(steps=1, shots=1).setting == "1-shot, 1 step"
    assert _case(steps=5).setting == "5-shot, 5 steps"
    assert Case("easyfsl", "easyfsl:protonet", "medfew:protonet", 5, 0, 1).setting == "5-shot"


def test_select_cases_by_substring_and_unknown() -> None:
    cases = build_cases()
    picked = select_cases(cases, ["learn2learn:maml|5-shot"])
    assert [c.inner_steps for c in picked] == [1, 5]
    assert select_cases(cases, None) == cases
    with pytest.raises(ValueError, match=r"\['nope'\] match no case"):
        select_cases(cases, ["nope"])


def test_judge_time_and_memory() -> None:
    target = Target("2x, no more memory", ("learn2learn:maml",), 5, 2.0, 1.0)
    fast_small = _row(_case(), [2.0], [0.5], peer_mb=1000.0, medfew_mb=900.0)
    fast_big = _row(_case(), [2.0], [0.5], peer_mb=1000.0, medfew_mb=1100.0)
    slow = _row(_case(), [1.0], [0.8])
    other_steps = _row(_case(steps=1), [1.0], [1.0])  # not covered: 1 inner step
    assert judge(target, [fast_small, other_steps])["met"] is True
    assert judge(target, [fast_small, fast_big])["met"] is False  # medfew used more memory
    verdict_slow = judge(target, [fast_small, slow])
    assert verdict_slow["met"] is False and verdict_slow["worst_time_ratio"] == 1.25
    assert judge(target, [other_steps])["met"] is None
    assert verdict(True) == "met" and verdict(False) == "NOT met" and verdict(None) == "not measured"


def test_every_target_covers_a_case() -> None:
    cases = build_cases()
    for target in TARGETS:
        assert any(target.covers(c) for c in cases), target.label


# ------------------------------------------------------------------ tables and the docs block


def _report(rows: list[dict]) -> dict:
    return {
        "generated_utc": "2026-12-01T12:00:00+00:00", "commands": [".venv-bench/bin/python -m benchmarks.peers.compare"],
        "machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 23.0, "python": "3.11.7",
                    "versions": {"torch": "2.14.1", "learn2learn": None}, "load_average": [1.0, 1.0, 1.0]},
        "settings": {"threads": 2, "warmup": 2, "repeats": 10},
        "results": rows, "targets": [judge(t, rows) for t in TARGETS],
        "sampler": {"setup": {"datasets": ["organamnist"], "split": "train", "ways": 5, "shots": 5, "queries": 15,
                              "meta_batch": 4, "augment": "standard", "normalize": "zscore", "steps": 8},
                    "methods": {"protonet": {"sampler_s": 0.004, "step_s": 0.2, "share_percent": 2.0,
                                             "worst_share_percent": 3.1, "sampler_over_step_percent": 2.04,
                                             "worst_sampler_over_step_percent": 3.2}}},
    }


def test_tables_show_ratios_and_verdicts() -> None:
    rows = [_row(_case(), [2.0, 2.0], [0.5, 0.5])]
    table = results_table(rows)
    assert len(table) == 3 and "**4.00x**" in table[2] and "5-shot, 5 steps" in table[2]
    assert "4.00x" in console_table(rows)[2]
    verdicts = targets_table([judge(t, rows) for t in TARGETS])
    assert "| met |" in verdicts[2]  # the 2nd-order MAML target, met by this row
    assert verdicts[3].endswith("| not measured |")


def test_render_block_and_replace_keep_the_rest_of_the_page() -> None:
    block = render_block(_report([_row(_case(), [2.0], [1.0])]))
    assert block.startswith(BEGIN) and block.endswith(END)
    assert "torch 2.14.1" in block and "learn2learn None" not in block
    assert "by: `.venv-bench/bin/python -m benchmarks.peers.compare`" in block
    assert "| protonet | 0.0040 | 0.200 | 2.0%, 3.1% | 2.0%, 3.2% |" in block
    page = "# Benchmarks\n\nhand-written\n"
    once = replace_block(page, block)
    assert once.startswith(page.rstrip("\n")) and once.count(BEGIN) == 1
    newer = render_block(_report([_row(_case(), [3.0], [1.0])]))
    twice = replace_block(once + "\n## After\nkept\n", newer)
    assert twice.count(BEGIN) == 1 and "**3.00x**" in twice and "**2.00x**" not in twice
    assert twice.endswith("## After\nkept\n") and "hand-written" in twice


def test_replace_block_refuses_a_broken_block() -> None:
    with pytest.raises(ValueError, match="broken generated block"):
        replace_block(f"text\n{BEGIN}\nno end\n", "x")
    with pytest.raises(ValueError, match="broken generated block"):
        replace_block(f"{END}\n{BEGIN}\n", "x")


# ------------------------------------------------------------------ the same network on both sides


def test_plain_conv4_is_medfew_conv4() -> None:
    from medfew.models import build_backbone

    ours = build_backbone("conv4", in_channels=3, image_size=28, hidden=64, norm="group")
    plain = PlainConv4(3, 28)
    plain.load_state_dict(ours.state_dict())  # same module tree, same shapes (strict)
    images = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    assert plain.feature_dim == ours.feature_dim == 64
    torch.testing.assert_close(plain(images), ours(images))
    assert PlainConv4(3, 28, n_classes=5)(images).shape == (2, 5)


def test_make_tasks_are_deterministic_and_shaped() -> None:
    from benchmarks.peers.sides import make_tasks

    case = _case(shots=1)
    a, b = make_tasks(case, 2), make_tasks(case, 2)
    sx, sy, qx, qy = a[1][3]
    assert len(a) == 2 and len(a[0]) == 4
    assert sx.shape == (5, 3, 28, 28) and qx.shape == (75, 3, 28, 28)
    assert sy.tolist() == [0, 1, 2, 3, 4] and qy.bincount().tolist() == [15] * 5
    torch.testing.assert_close(a[1][3][2], b[1][3][2])
    assert not torch.equal(a[0][0][0], a[1][0][0])


def test_build_side_unknown_name() -> None:
    from benchmarks.peers.sides import build_side

    with pytest.raises(KeyError, match="unknown side 'medfew:nope'"):
        build_side("medfew:nope", _case())


def test_medfew_side_runs_one_meta_iteration() -> None:
    from benchmarks.peers.sides import build_side, make_tasks

    case = Case("medfew only", "medfew:protonet", "medfew:protonet", 1, 0, 1)
    side = build_side("medfew:protonet", case)
    episodes = side.prepare(make_tasks(case, 1)[0])
    assert side.info["library"] == "medfew" and side.info["backbone"]["norm"] == "group"
    assert episodes[0].ways == 5 and episodes[0].query_images.shape == (75, 3, 28, 28)
    side.step(episodes)  # forward, backward and an Adam step through medfew's public training call


@pytest.mark.slow
def test_driver_runs_both_sides_in_lockstep_processes() -> None:
    from benchmarks.peers.driver import run_case

    case = Case("medfew vs medfew", "medfew:protonet", "medfew:protonet", 1, 0, 1)
    row = run_case(case, threads=1, warmup=0, repeats=2)
    assert row["peer"]["repeats"] == row["medfew"]["repeats"] == 2
    assert row["peer"]["peak_rss_mb"] >= row["peer"]["rss_ready_mb"] > 0
    assert row["medfew"]["info"]["library"] == "medfew"


@pytest.mark.slow
def test_driver_reports_a_failing_worker() -> None:
    from benchmarks.peers.driver import WorkerError, run_case

    case = Case("broken", "medfew:nope", "medfew:protonet", 1, 0, 1)
    with pytest.raises(WorkerError, match="unknown side 'medfew:nope'"):
        run_case(case, threads=1, warmup=0, repeats=1)
