"""The test-time configurations a suggestion chooses among, and a method rebuilt with one of them.

A configuration is a dict of method options (``load_checkpoint(..., method_options=...)``): ``{}`` is
the checkpoint's own settings. The grid depends on what the method accepts:

* embedding methods with a ``head`` option (ProtoNet, MatchingNet, Baseline++): their own read-out
  and ``head="finetune"`` over steps and learning rates (the fine-tuning grid of
  :func:`medfew.calibrate.candidate_options`, plus a short schedule), each with every
  ``feature_transform`` the method takes, and optionally fine-tuned backbone depths;
* the MAML family: the inner learning rate (the saved one, halved and doubled) and test-time inner steps.

Configurations that resolve to the same hyperparameters as an earlier one are dropped, so ``{}``
stands for the checkpoint's own settings exactly once.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
from collections.abc import Sequence
from typing import Any

from medfew.calibrate import FINETUNE_LRS, candidate_options
from medfew.methods import build_method, method_class
from medfew.methods.base import FewShotMethod

SHORT_FINETUNE_STEPS = 10
"""A shorter fine-tuning schedule than calibration's, added to its grid (tiny support sets overfit fast)."""
FEATURE_TRANSFORMS: tuple[str, ...] = ("l2", "cl2")
INNER_LR_FACTORS: tuple[float, ...] = (1.0, 0.5, 2.0)
TEST_INNER_STEPS: tuple[int, ...] = (5, 10, 20)


def configuration_grid(method: str, saved: dict[str, Any], depths: Sequence[int] = (0,)) -> list[dict[str, Any]]:
    """The candidate configurations of a checkpoint, ``{}`` (its own settings) first.

    Args:
        method: The registered method name.
        saved: The checkpoint's method hyperparameters.
        depths: Fine-tuned backbone depths to include (0: the head alone, on fixed features).

    Returns:
        Distinct option dicts (distinct once merged into ``saved``).
    """
    accepted = inspect.signature(method_class(method)).parameters
    grid: list[dict[str, Any]] = [{}]
    if "finetune_steps" in accepted:
        transforms = FEATURE_TRANSFORMS if "feature_transform" in accepted else (None,)
        finetune = [c for c in candidate_options(method, depths) if c]
        finetune += [{"head": "finetune", "finetune_steps": SHORT_FINETUNE_STEPS, "finetune_lr": lr,
                      "finetune_depth": depth} for depth, lr in itertools.product(depths, FINETUNE_LRS)]
        own_head = {"head": saved["head"]} if "head" in saved else {}
        for transform, options in itertools.product(transforms, [own_head, *finetune]):
            grid.append({**options, **({"feature_transform": transform} if transform else {})})
    elif "inner_lr" in accepted:
        lr = float(saved.get("inner_lr", 0.01))
        for factor, steps in itertools.product(INNER_LR_FACTORS, TEST_INNER_STEPS):
            grid.append({"inner_lr": lr * factor, "test_inner_steps": steps})
    return _distinct(grid, saved)


def _distinct(grid: list[dict[str, Any]], saved: dict[str, Any]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for options in grid:
        key = configuration_key({**saved, **options})
        if key not in seen:
            seen.add(key)
            out.append(options)
    return out


def configuration_key(options: dict[str, Any]) -> str:
    """A canonical string of an option dict (sorted JSON), used to match configurations."""
    return json.dumps(options, sort_keys=True)


def describe(options: dict[str, Any]) -> str:
    """A short human description: ``"checkpoint settings"`` or ``"head=finetune, finetune_lr=0.01, ..."``."""
    if not options:
        return "checkpoint settings"
    return ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in sorted(options.items()))


def with_options(method: FewShotMethod, options: dict[str, Any]) -> FewShotMethod:
    """A copy of ``method`` rebuilt with test-time ``options`` (same weights and temperature).

    Args:
        method: A loaded method (its ``hyperparameters()`` rebuild it, as a checkpoint does).
        options: Hyperparameters that replace its own.

    Raises:
        ConfigError: An option the method does not take, or a bad value (named).
    """
    if not options:
        return copy.deepcopy(method)
    rebuilt = build_method(method.name, copy.deepcopy(method.backbone), **{**method.hyperparameters(), **options})
    state = method.state_dict()
    rebuilt.load_state_dict(state)
    rebuilt.temperature = method.temperature
    return rebuilt.to(next(iter(state.values())).device if state else "cpu").eval()
