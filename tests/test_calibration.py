"""Temperature scaling: fit_temperature on synthetic over-, under- and well-calibrated logits, and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medfew.errors import ConfigError, EpisodeError
from medfew.evaluation import TEMPERATURE_BOUNDS, expected_calibration_error, fit_temperature, pooled_nll


def calibrated_episodes(
    n_episodes: int, scale: float, seed: int, ways: tuple[int, ...] = (2, 3, 5), queries: int = 30
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Episodes whose labels are *drawn from* ``softmax(logits)``: the logits are calibrated by construction.

    Returned logits are multiplied by ``scale``: ``scale > 1`` makes them overconfident (the right
    temperature is then ``scale``), ``scale < 1`` underconfident. Episodes cycle through ``ways``.
    """
    g = torch.Generator().manual_seed(seed)
    logits, labels = [], []
    for i in range(n_episodes):
        n = ways[i % len(ways)]
        z = torch.randn(queries, n, generator=g, dtype=torch.float64) * 2.0
        y = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g).squeeze(1)
        logits.append(z * scale)
        labels.append(y)
    return logits, labels


def pooled_ece(logits: list[torch.Tensor], labels: list[torch.Tensor], temperature: float) -> float:
    probs = [torch.softmax(z / temperature, dim=1) for z in logits]
    confidence = torch.cat([p.max(1).values for p in probs]).numpy()
    correct = torch.cat([p.argmax(1) == y for p, y in zip(probs, labels)]).numpy()
    return expected_calibration_error(confidence, correct)


def test_overconfident_logits_get_a_temperature_above_one_that_lowers_nll_and_ece() -> None:
    logits, labels = calibrated_episodes(200, scale=3.0, seed=0)
    t = fit_temperature(logits, labels)
    assert 2.5 < t < 3.6  # the scale the logits were inflated by
    assert pooled_nll(logits, labels, t) < pooled_nll(logits, labels, 1.0) - 0.1
    assert pooled_ece(logits, labels, t) < 0.5 * pooled_ece(logits, labels, 1.0)
    # T minimises the NLL: a little either side is worse
    assert pooled_nll(logits, labels, t) <= min(pooled_nll(logits, labels, t * 1.05), pooled_nll(logits, labels, t / 1.05))


def test_underconfident_logits_get_a_temperature_below_one() -> None:
    logits, labels = calibrated_episodes(200, scale=0.4, seed=1)
    t = fit_temperature(logits, labels)
    assert 0.3 < t < 0.5
    assert pooled_nll(logits, labels, t) < pooled_nll(logits, labels, 1.0)


def test_well_calibrated_logits_give_a_temperature_close_to_one() -> None:
    logits, labels = calibrated_episodes(300, scale=1.0, seed=2)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)


def test_numpy_and_float32_inputs_and_the_search_bounds() -> None:
    logits, labels = calibrated_episodes(50, scale=2.0, seed=3)
    reference = fit_temperature(logits, labels)
    as_numpy = fit_temperature([z.numpy() for z in logits], [y.numpy() for y in labels])
    as_float32 = fit_temperature([z.float() for z in logits], labels)
    assert as_numpy == pytest.approx(reference, rel=1e-4) and as_float32 == pytest.approx(reference, rel=1e-3)
    # labels independent of the logits: the flattest allowed softmax is best, the search stops at its bound
    g = torch.Generator().manual_seed(4)
    noise = [torch.randn(40, 3, generator=g) * 5 for _ in range(10)]
    random_labels = [torch.randint(0, 3, (40,), generator=g) for _ in range(10)]
    assert fit_temperature(noise, random_labels) == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-3)
    # perfectly separated, always right: the sharpest softmax is best (the NLL is flat near 0 there)
    sure = [torch.eye(3) * 2.0]
    assert TEMPERATURE_BOUNDS[0] <= fit_temperature(sure, [torch.arange(3)]) < 0.1


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        ([], [], "no episodes: fit_temperature needs"),
        ([torch.zeros(2, 2)], [], "got logits of 1 episodes but labels of 0"),
        (torch.zeros(2, 2), [torch.zeros(2, dtype=torch.int64)], "must be sequences with one"),
        ([torch.tensor([[0.0, math.nan], [0.0, 1.0]])], [torch.tensor([0, 1])],
         r"episode 0: logits hold 1 non-finite values \(rows \[0\]\)"),
        ([torch.zeros(2, 2), torch.tensor([[0.0, math.inf]])], [torch.tensor([0, 1]), torch.tensor([0])],
         r"episode 1: logits hold 1 non-finite"),
        ([torch.zeros(3)], [torch.zeros(3, dtype=torch.int64)], r"non-empty \(M, N\) array with N >= 2, got shape \(3,\)"),
        ([torch.zeros(0, 2)], [torch.zeros(0, dtype=torch.int64)], r"got shape \(0, 2\)"),
        ([torch.zeros(2, 2)], [torch.tensor([0, 2])], r"labels must lie in \[0, 2\), got \[0, 2\]"),
        ([torch.zeros(2, 2)], [torch.tensor([0.0, 1.0])], "labels must be integers, got float64"),
        ([torch.zeros(2, 2)], [torch.tensor([0, 1, 1])], r"labels must be \(2,\) to match logits \(2, 2\), got \(3,\)"),
        ([torch.zeros(2, 2, dtype=torch.int64)], [torch.tensor([0, 1])], "logits must be floating point, got int64"),
        ([[[0.0, 1.0]]], [torch.tensor([0])], "logits must be a torch.Tensor or numpy array, got list"),
    ],
)
def test_fit_temperature_refuses_bad_input(logits, labels, match) -> None:
    with pytest.raises(EpisodeError, match=match):
        fit_temperature(logits, labels)


def test_pooled_nll_checks_the_temperature() -> None:
    logits, labels = [torch.zeros(2, 2)], [torch.tensor([0, 1])]
    assert pooled_nll(logits, labels, 3.0) == pytest.approx(math.log(2))
    for bad in (0.0, -1.0, math.inf, math.nan, True, "2"):
        with pytest.raises(ConfigError, match="temperature must be a finite number > 0, got"):
            pooled_nll(logits, labels, bad)  # type: ignore[arg-type]
    assert pooled_nll(logits, labels, np.float32(2.0)) == pytest.approx(math.log(2))
