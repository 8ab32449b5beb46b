"""Run methods and baselines over episodes: ``evaluate`` one of them, or ``compare`` several.

Both only use the method contract: ``adapted = method.adapt(support_images, support_labels)`` (with
gradients enabled, since MAML-family methods fine-tune inside ``adapt``) then
``adapted.predict(query_images)`` under ``torch.no_grad()``. An ``nn.Module`` method is put in eval
mode for the run and every submodule's train/eval flag is restored afterwards. The method is not
moved: it must already live on ``device``; the episodes are moved there.

Calibration: the logits are divided by the method's ``temperature`` (``getattr(method,
"temperature", 1.0)``, set from a checkpoint's ``calibration`` block) before the metrics, and the ECE
of the undivided logits is reported beside. With ``conformal_alpha`` set (default 0.1) and at least
two support images in every class, each episode also gets conformal prediction sets calibrated by
leave-one-out on its support set (:mod:`medfew.evaluation.conformal`): **one extra adapt per support
image** for methods without a cheaper ``leave_one_out_logits`` (the MAML family: 25 extra adapts per
5-way 5-shot episode). Pass ``conformal_alpha=None`` where only accuracy matters (e.g. validation
during training).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from contextlib import ExitStack, contextmanager
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from tqdm import tqdm

from medfew.data.episodes.episode import Episode
from medfew.errors import ConfigError, EpisodeError
from medfew.evaluation.calibration import check_temperature
from medfew.evaluation.conformal import (
    DEFAULT_ALPHA,
    ConformalSets,
    check_alpha,
    leave_one_out_logits,
    leave_one_out_unavailable,
)
from medfew.evaluation.metrics import EpisodeMetrics, episode_metrics, softmax_probabilities
from medfew.evaluation.summary import EvaluationSummary, summarize
from medfew.methods.base import AdaptedModel


@runtime_checkable
class Adaptable(Protocol):
    """Anything with the method contract's ``adapt`` (a ``FewShotMethod`` or a ``Baseline``)."""

    def adapt(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> AdaptedModel:
        """``(N*K, C, H, W)``, ``(N*K,)`` -> a model whose ``predict`` maps ``(M, C, H, W)`` to ``(M, N)``."""
        ...


class EpisodeSource(Protocol):
    """An episode sampler: ``sample(index)`` is deterministic for a given index."""

    def sample(self, index: int) -> Episode:
        """Build episode number ``index``."""
        ...


@contextmanager
def _eval_mode(method: object) -> Iterator[None]:
    """Put an ``nn.Module`` in eval mode and restore each submodule's own flag afterwards."""
    if not isinstance(method, nn.Module):
        yield
        return
    modes = [(module, module.training) for module in method.modules()]
    method.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _method_name(method: object, method_name: str | None) -> str:
    return method_name or getattr(method, "name", "") or type(method).__name__


def _check_method(method: object, name: str) -> None:
    if not callable(getattr(method, "adapt", None)):
        raise ConfigError(
            f"method {name!r}: expected an object with adapt(support_images, support_labels), "
            f"got {type(method).__name__}"
        )


def _resolve_device(device: torch.device | str, methods: Iterable[tuple[str, object]]) -> torch.device:
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"device: {device!r} is not a torch device ({error})") from error
    for name, method in methods:
        if isinstance(method, nn.Module):
            tensor = next(itertools.chain(method.parameters(), method.buffers()), None)
            if tensor is not None and tensor.device.type != target.type:
                raise ConfigError(
                    f"device: method {name!r} lives on {tensor.device} but evaluation was asked on {target}; "
                    f"move it first with method.to({str(target)!r})"
                )
    return target


def _check_count(value: int, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def method_temperature(method: object, name: str = "") -> float:
    """The method's logit temperature ``T`` (``getattr(method, "temperature", 1.0)``), validated.

    Raises:
        ConfigError: ``T`` is not a finite number > 0.
    """
    return check_temperature(getattr(method, "temperature", 1.0), f"method {name!r}: temperature")


def _check_conformal_alpha(conformal_alpha: float | None) -> float | None:
    return None if conformal_alpha is None else check_alpha(conformal_alpha, "conformal_alpha")


def run_episode(
    method: Adaptable,
    episode: Episode,
    *,
    name: str = "",
    index: int = 0,
    conformal_alpha: float | None = DEFAULT_ALPHA,
) -> EpisodeMetrics:
    """Adapt ``method`` to one episode's support set and score its query set.

    Args:
        method: Object with ``adapt``; it and the episode must be on the same device.
        episode: The episode (labels episode-local, ``N = episode.ways``).
        name: Method name used in error messages.
        index: Episode index used in error messages.
        conformal_alpha: Level of the leave-one-out conformal prediction sets, or ``None`` for none.
            Episodes with a class of a single support image get none either way.

    Returns:
        The episode's metrics, on ``softmax(logits / method.temperature)``.

    Raises:
        EpisodeError: The episode has no queries, ``adapt`` returned something without ``predict``,
            or ``predict`` (or the leave-one-out scoring) did not return an ``(M, N)`` tensor.
        ConfigError: A bad ``conformal_alpha`` or method temperature.
    """
    temperature = method_temperature(method, name)
    conformal_alpha = _check_conformal_alpha(conformal_alpha)
    logits = query_logits(method, episode, name=name, index=index)
    sets = None
    if conformal_alpha is not None and leave_one_out_unavailable(episode.support_labels) is None:
        loo = leave_one_out_logits(method, episode.support_images, episode.support_labels)
        calibrated = softmax_probabilities(loo.double() / temperature)
        conformal = ConformalSets.fit(calibrated, episode.support_labels, conformal_alpha)
        sets = conformal.predict(softmax_probabilities(logits.double() / temperature))
    return episode_metrics(logits, episode.query_labels, class_names=episode.class_names, shots=episode.shots,
                           temperature=temperature, prediction_sets=sets,
                           conformal_alpha=conformal_alpha if sets is not None else None)


def query_logits(method: Adaptable, episode: Episode, *, name: str = "", index: int = 0) -> torch.Tensor:
    """Adapt ``method`` to an episode's support set and return its raw ``(M, N)`` query logits.

    ``adapt`` runs with autograd enabled, ``predict`` under ``torch.no_grad()``. These are the logits
    a temperature is fitted to (:func:`medfew.evaluation.calibration.fit_temperature`).

    Raises:
        EpisodeError: The episode has no queries, ``adapt`` returned something without ``predict``,
            or ``predict`` did not return an ``(M, N)`` tensor.
    """
    m, n = int(episode.query_images.shape[0]), episode.ways
    if m == 0:
        raise EpisodeError(f"episode {index} ({episode.source or 'unknown source'}) has no query images")
    with torch.enable_grad():  # MAML-family methods take gradient steps inside adapt
        adapted = method.adapt(episode.support_images, episode.support_labels)
    if not callable(getattr(adapted, "predict", None)):
        raise EpisodeError(
            f"method {name!r}, episode {index}: adapt returned {type(adapted).__name__}, which has no predict()"
        )
    with torch.no_grad():
        logits = adapted.predict(episode.query_images)
    if not isinstance(logits, torch.Tensor):
        raise EpisodeError(
            f"method {name!r}, episode {index}: predict returned {type(logits).__name__}, expected a tensor"
        )
    if tuple(logits.shape) != (m, n):
        raise EpisodeError(
            f"method {name!r}, episode {index}: predict returned logits of shape {tuple(logits.shape)}, "
            f"expected (M, N) = ({m}, {n})"
        )
    return logits.detach()


def evaluate(
    method_or_baseline: Adaptable,
    episodes: Iterable[Episode],
    *,
    n_episodes: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    method_name: str | None = None,
    conformal_alpha: float | None = DEFAULT_ALPHA,
    on_episode: Callable[[int, Episode, EpisodeMetrics], None] | None = None,
) -> EvaluationSummary:
    """Evaluate one method or baseline on a stream of episodes.

    Args:
        method_or_baseline: A ``FewShotMethod`` (already on ``device``) or a ``Baseline``.
        episodes: Episodes to evaluate, e.g. ``sampler.episodes(600)``; consumed once.
        n_episodes: Take only the first ``n_episodes`` (the iterable must hold at least that many);
            ``None`` consumes the whole (finite) iterable.
        device: Where the episodes are moved before ``adapt``.
        progress: Show a tqdm progress bar (on stderr) with the running accuracy.
        method_name: Name in the summary; defaults to the method's ``name`` or its class name.
        conformal_alpha: Level of the per-episode leave-one-out prediction sets (coverage, set size,
            selective accuracy), or ``None`` to skip them (one extra adapt per support image).
        on_episode: Called as ``on_episode(index, episode, metrics)`` after each episode (e.g.
            :class:`medfew.suggest.EvaluationRecorder`, which keeps (task, configuration, score) records).

    Returns:
        The ``EvaluationSummary`` of all episodes.

    Raises:
        ConfigError: Not a method, bad ``n_episodes``, ``device``, ``conformal_alpha`` or method
            temperature, or a method on another device.
        EpisodeError: No episodes, fewer than ``n_episodes``, an item that is not an ``Episode``, or a
            method output of the wrong shape.
    """
    name = _method_name(method_or_baseline, method_name)
    _check_method(method_or_baseline, name)
    target = _resolve_device(device, [(name, method_or_baseline)])
    method_temperature(method_or_baseline, name)
    conformal_alpha = _check_conformal_alpha(conformal_alpha)
    if n_episodes is not None:
        _check_count(n_episodes, "n_episodes", 1)
    if not isinstance(episodes, Iterable):
        hint = "; pass sampler.episodes(n) for a sampler" if hasattr(episodes, "sample") else ""
        raise ConfigError(f"episodes must be an iterable of Episode, got {type(episodes).__name__}{hint}")
    stream: Iterable[Episode] = episodes if n_episodes is None else itertools.islice(episodes, n_episodes)
    total = n_episodes if n_episodes is not None else (len(episodes) if isinstance(episodes, Sized) else None)
    results: list[EpisodeMetrics] = []
    accuracy_sum = 0.0
    with _eval_mode(method_or_baseline), tqdm(
        stream, total=total, desc=f"evaluate {name}", unit="episode", disable=not progress
    ) as bar:
        for index, episode in enumerate(bar):
            if not isinstance(episode, Episode):
                raise EpisodeError(f"item {index} of episodes is a {type(episode).__name__}, not an Episode")
            metrics = run_episode(method_or_baseline, episode.to(target), name=name, index=index,
                                  conformal_alpha=conformal_alpha)
            results.append(metrics)
            if on_episode is not None:
                on_episode(index, episode, metrics)
            accuracy_sum += metrics.accuracy
            bar.set_postfix(accuracy=f"{accuracy_sum / len(results):.3f}")
    if not results:
        raise EpisodeError(f"no episodes to evaluate method {name!r} on: the episodes iterable is empty")
    if n_episodes is not None and len(results) < n_episodes:
        raise EpisodeError(
            f"asked for n_episodes={n_episodes} but the episodes iterable held only {len(results)}"
        )
    return summarize(results, method=name)


def _private_copy(episode: Episode) -> Episode:
    """The same episode with its own tensors, so one method cannot alter what the next one sees."""
    return dataclasses.replace(
        episode,
        support_images=episode.support_images.clone(),
        support_labels=episode.support_labels.clone(),
        query_images=episode.query_images.clone(),
        query_labels=episode.query_labels.clone(),
    )


def compare(
    methods: Mapping[str, Adaptable],
    sampler: EpisodeSource,
    n_episodes: int,
    *,
    start: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    conformal_alpha: float | None = DEFAULT_ALPHA,
) -> dict[str, EvaluationSummary]:
    """Evaluate several methods on exactly the same episodes.

    Each index ``start, ..., start + n_episodes - 1`` is sampled once and that episode (a private copy
    of its tensors per method) is given to every method in turn.

    Args:
        methods: Name -> method or baseline (``nn.Module`` methods already on ``device``).
        sampler: Has ``sample(index) -> Episode`` (e.g. ``medfew.data.episodes.sampler.EpisodeSampler``).
        n_episodes: Number of episodes.
        start: First episode index.
        device: Where the episodes are moved.
        progress: Show a tqdm progress bar.
        conformal_alpha: Level of the leave-one-out prediction sets, or ``None`` (see :func:`evaluate`).

    Returns:
        Name -> ``EvaluationSummary``, in the order of ``methods``.

    Raises:
        ConfigError: Empty ``methods``, a non-string name, an object without ``adapt``, a sampler
            without ``sample``, bad ``n_episodes``/``start``/``device``/``conformal_alpha``, or a
            bad method temperature.
        EpisodeError: The sampler returned something other than an ``Episode``, or a method output
            of the wrong shape.
    """
    if not isinstance(methods, Mapping) or not methods:
        raise ConfigError(f"methods must be a non-empty dict of name -> method, got {methods!r}")
    for name, method in methods.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"methods: every name must be a non-empty string, got {name!r}")
        _check_method(method, name)
        method_temperature(method, name)
    conformal_alpha = _check_conformal_alpha(conformal_alpha)
    if not callable(getattr(sampler, "sample", None)):
        raise ConfigError(f"sampler must have sample(index) -> Episode, got {type(sampler).__name__}")
    _check_count(n_episodes, "n_episodes", 1)
    _check_count(start, "start", 0)
    target = _resolve_device(device, methods.items())
    results: dict[str, list[EpisodeMetrics]] = {name: [] for name in methods}
    with ExitStack() as stack:
        for method in methods.values():
            stack.enter_context(_eval_mode(method))
        indices = range(start, start + n_episodes)
        for index in tqdm(indices, desc=f"compare {len(methods)} methods", unit="episode", disable=not progress):
            episode = sampler.sample(index)
            if not isinstance(episode, Episode):
                raise EpisodeError(
                    f"sampler.sample({index}) returned a {type(episode).__name__}, not an Episode"
                )
            episode = episode.to(target)
            for name, method in methods.items():
                results[name].append(run_episode(method, _private_copy(episode), name=name, index=index,
                                                 conformal_alpha=conformal_alpha))
    return {name: summarize(metrics, method=name) for name, metrics in results.items()}
