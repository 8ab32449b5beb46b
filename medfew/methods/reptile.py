"""Reptile (Nichol et al. 2018): move the meta-parameters toward task-adapted parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.func import vmap

from medfew.data.episodes.episode import Episode
from medfew.methods.base import StepOutput
from medfew.methods.functional import accuracy
from medfew.methods.gradient_based import GradientBasedMethod
from medfew.methods.inner_loop import gradients_enabled
from medfew.methods.registry import register_method
from medfew.methods.tasks import TaskBatch


@register_method("reptile")
class Reptile(GradientBasedMethod):
    """Reptile with a linear head initialised per episode (as in MAML, for any ``N``).

    ``training_step`` runs ``inner_steps`` of SGD on each episode's support *and* query images, from
    the current parameters, and writes ``theta - mean_episodes(theta_adapted)`` into the backbone's
    ``.grad`` (added to any gradient already there). The shared outer optimiser then applies it: with
    ``SGD(lr=eps)`` this is exactly Reptile with outer step size ``eps``. The head is rebuilt for each
    episode and is not meta-learnt. ``adapt`` fine-tunes on the support with the same inner loop, and
    ``episode_loss`` (validation) is the first-order MAML query loss.

    The inner loops of a meta-batch of one shape run as one ``vmap`` (they only read the detached
    meta-parameters, and the update is the mean of their results); ``vectorize=False`` forces the
    per-task loop.

    Options (the family constructor's, see :class:`~medfew.methods.gradient_based.GradientBasedMethod`):
    ``inner_steps`` (SGD steps per episode during meta-training), ``test_inner_steps`` (fine-tuning steps
    in eval mode; ``None`` means ``2 * inner_steps``), ``inner_lr``, ``head`` and ``vectorize``. The rest
    are refused: the update is plain SGD on every parameter, first order, never backpropagated (the
    outer update is a difference of weights, which could not meta-learn a rule's parameters).
    """

    PRESET: ClassVar[dict[str, Any]] = {"first_order": True, "inner_params": "all", "learn_inner_lr": False, "inner_optimizer": "sgd",
              "checkpoint_inner": False}
    REFUSED: ClassVar[tuple[str, ...]] = (*PRESET, "lstm_hidden", "lstm_preprocess_p")

    def training_step(self, episodes: Sequence[Episode]) -> StepOutput:
        """Write the Reptile direction into ``.grad``.

        Returns:
            The query-part loss and accuracy of the inner loop's last step (logits of the partly
            adapted model on data it trains on: a training, not a validation, figure).
        """
        meta = dict(self.backbone.named_parameters())
        batch = self.vectorized_batch(episodes)
        if batch is None:
            adapted, query_logits = self._looped_inner_loops(episodes)
        else:
            adapted, query_logits = self._batched_inner_loops(batch)
        losses = torch.stack([F.cross_entropy(q, e.query_labels) for q, e in zip(query_logits, episodes)])
        accuracies = torch.stack([accuracy(q, e.query_labels) for q, e in zip(query_logits, episodes)])
        for k, param in meta.items():
            direction = param.detach() - adapted[k]
            param.grad = direction if param.grad is None else param.grad + direction
        # figures stay on the device: the loop reads them only when it logs (no sync per step)
        return StepOutput(loss=losses.detach().mean(), accuracy=accuracies.mean())

    def _looped_inner_loops(self, episodes: Sequence[Episode]) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """Task by task: the mean adapted backbone parameters and each task's ``(M, N)`` query logits."""
        mean: dict[str, torch.Tensor] = {}
        query_logits = []
        for episode in episodes:
            images = torch.cat([episode.support_images, episode.query_images])
            labels = torch.cat([episode.support_labels, episode.query_labels])
            task = self.run_inner_loop(
                images, labels, episode.ways, steps=self.inner_steps, first_order=True, detach=True
            )
            for k, value in task.backbone.items():
                share = value / len(episodes)
                mean[k] = share if k not in mean else mean[k] + share
            query_logits.append(task.logits[episode.support_labels.shape[0] :])
        return mean, query_logits

    def _batched_inner_loops(self, batch: TaskBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One ``vmap`` over the tasks: the mean adapted parameters and ``(T, M, N)`` query logits."""
        params = {k: v.detach() for k, v in self.backbone.named_parameters()}
        n_support = batch.support_labels.shape[1]

        def inner(images: torch.Tensor, labels: torch.Tensor):
            task = self._adapt(params, images, labels, batch.ways, steps=self.inner_steps, first_order=True)
            return task.backbone, task.logits[n_support:]

        with gradients_enabled():
            adapted, query_logits = vmap(inner, randomness="different")(
                torch.cat([batch.support_images, batch.query_images], dim=1),
                torch.cat([batch.support_labels, batch.query_labels], dim=1),
            )
        return {k: v.detach().mean(0) for k, v in adapted.items()}, query_logits.detach()
