"""Shared machinery of the gradient-based methods (MAML family, Reptile): a linear head fitted by
the functional inner loop of :mod:`medfew.methods.inner_loop`.

Backbones with running-statistics BatchNorm are refused: ``functional_call`` would update those
buffers in place on every inner step (and ``vmap`` refuses it), and switching them off makes
predictions depend on the batch. Per-image norms (``norm="group"``, the backbone default) work under
every ``torch.func`` transform and keep a query's prediction independent of its batch.
BatchNorm without running statistics (``track_running_stats=False``) is accepted: it normalises
with batch statistics in train and eval mode alike, and under ``vmap`` each task uses its own. Its
second-order terms under ``vmap`` are wrong in PyTorch 2.13 (the double backward of ``batch_norm``
batched over tasks differs from the per-task one by ~3e-2 in float64, while first order agrees to
1e-15), so second-order MAML through a BatchNorm backbone always runs the per-task loop.

Meta-training is vectorised: when the episodes of a meta-batch share one shape (the usual case),
their inner loops run as one ``torch.func.vmap`` over the stacked tasks, and the outer ``backward``
differentiates through all of them at once (second order stays exact). Episodes of different shapes,
``vectorize=False``, ``vectorize="auto"`` on the CPU, channels-last weights or images (``vmap``'s
``group_norm`` refuses that layout) and second-order ``checkpoint_inner=True`` (see
:mod:`medfew.methods.inner_loop`) run the plain per-task loop, which gives the same meta-gradients up to
float rounding.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from medfew.data.episodes.episode import Episode
from medfew.errors import ConfigError
from medfew.messages import short_repr
from medfew.methods.base import FewShotMethod, StepOutput, support_classes
from medfew.methods.functional import accuracy
from medfew.methods.inner_loop import (
    HEAD_BIAS,
    HEAD_INITS,
    HEAD_WEIGHT,
    Params,
    TaskParams,
    adapt_task,
    gradients_enabled,
)
from medfew.methods.inner_optimizers import (
    INNER_OPTIMIZERS,
    InnerOptimizer,
    build_inner_optimizer,
)
from medfew.methods.tasks import FunctionalClassifier, TaskBatch
from medfew.models.checks import check_bool, check_choice, check_int, check_positive
from medfew.models.norm import running_stat_norms

INNER_PARAMS: tuple[str, ...] = ("all", "head")


class GradientBasedMethod(FewShotMethod):
    """The MAML family (MAML, FOMAML, Meta-SGD, l2o) and Reptile: one constructor, one inner loop.

    A method of the family is this constructor with some options fixed (``PRESET``) or not offered at
    all (``REFUSED``); the update rule of the inner loop is an
    :class:`~medfew.methods.inner_optimizers.InnerOptimizer` chosen by ``inner_optimizer`` and
    registered under its ``state_key`` (so its meta-learned parameters sit in the method's
    ``state_dict``: ``learnt_lrs.*`` for Meta-SGD, as always, ``inner_optimizer.*`` for the LSTM).

    The number of inner steps is ``inner_steps`` in train mode and ``test_inner_steps`` in eval mode,
    for ``adapt`` and ``episode_loss`` alike. ``adapt`` always runs a first-order loop on detached
    parameters (no meta-gradient is needed at test time) and works under ``torch.no_grad()``.

    Args:
        backbone: ``(B, C, H, W) -> (B, D)`` encoder without running-statistics BatchNorm.
        inner_steps: Inner steps during meta-training.
        test_inner_steps: Inner steps in eval mode; ``None`` means ``2 * inner_steps``.
        inner_lr: Inner-loop learning rate (the initial rate of Meta-SGD, the base rate of the LSTM).
        first_order: Ignore second-order terms (FOMAML): autograd records no inner gradient, only the
            updates (so a learned rule still gets meta-gradients through its updates).
        head: Head initialisation, ``"proto"`` (Proto-MAML) or ``"zero"``; both work for any ``N``.
        inner_params: Adapt ``"all"`` parameters in the inner loop, or the ``"head"`` only.
        learn_inner_lr: Meta-SGD: meta-learn one learning rate per adapted scalar (the head's rates
            are shared across classes, ``(1, D)`` and ``(1,)``, so they work for any ``N``); the same as
            ``inner_optimizer="metasgd"``.
        inner_optimizer: The update rule, a key of
            :data:`~medfew.methods.inner_optimizers.INNER_OPTIMIZERS`: ``"sgd"``, ``"metasgd"`` or
            ``"lstm"`` (the coordinatewise LSTM of :mod:`medfew.methods.lstm_optimizer`).
        lstm_hidden: Hidden size of the LSTM rule (``None``: 20); only with ``inner_optimizer="lstm"``.
        lstm_preprocess_p: ``p`` of its gradient preprocessing (``None``: 10); only with the LSTM.
        vectorize: ``True`` runs the inner loops of a meta-batch of one shape as one ``vmap``;
            ``False`` forces the per-task loop (same meta-gradients); ``"auto"`` (default) uses ``vmap``
            for episodes on a CUDA device and the loop on the CPU, where ``benchmarks/train_speed.py``
            measured the loop faster (Conv4 28x28, meta-batch 4: FOMAML 5 steps 1.14 s against 1.45 s,
            MAML 2.10 s against 2.67 s per meta-iteration, 2 threads).
        checkpoint_inner: Recompute the inner steps in the outer backward instead of storing them
            (memory of one inner step instead of ``inner_steps``); second order only (first-order
            steps store no graph, so it changes nothing there); implies the per-task loop.

    Raises:
        ConfigError: An invalid option, an option this method refuses or fixes otherwise, or one the
            update rule cannot support (``vectorize=True`` / ``checkpoint_inner=True`` for a rule
            without ``supports_vmap`` / ``supports_checkpoint``).
    """

    PRESET: ClassVar[dict[str, Any]] = {}  # options fixed by the method (another value is refused)
    REFUSED: ClassVar[tuple[str, ...]] = ()  # options the method does not take (not in its hyperparameters)
    _on_inner_step: Callable[[int, int], None] | None = None  # set by :func:`reporting_inner_steps`

    def __init__(
        self,
        backbone: nn.Module,
        *,
        inner_steps: int = 5,
        test_inner_steps: int | None = None,
        inner_lr: float = 0.01,
        first_order: bool = False,
        head: str = "proto",
        inner_params: str = "all",
        learn_inner_lr: bool = False,
        inner_optimizer: str = "sgd",
        lstm_hidden: int | None = None,
        lstm_preprocess_p: float | None = None,
        vectorize: bool | str = "auto",
        checkpoint_inner: bool = False,
    ) -> None:
        super().__init__(backbone)
        self.vectorize = vectorize if vectorize == "auto" else check_bool(self.name, "vectorize", vectorize)
        self.checkpoint_inner = check_bool(self.name, "checkpoint_inner", checkpoint_inner)
        self.inner_steps = check_int(self.name, "inner_steps", inner_steps, 0)
        if test_inner_steps is None:
            test_inner_steps = 2 * inner_steps
        self.test_inner_steps = check_int(self.name, "test_inner_steps", test_inner_steps, 0)
        self.inner_lr = check_positive(self.name, "inner_lr", inner_lr)
        self.first_order = check_bool(self.name, "first_order", first_order)
        self.head = check_choice(self.name, "head", head, HEAD_INITS)
        self.inner_params = check_choice(self.name, "inner_params", inner_params, INNER_PARAMS)
        stats = running_stat_norms(backbone)
        if stats:
            raise ConfigError(
                f"{self.name}: the backbone has BatchNorm with running statistics ({stats[0]!r}"
                f"{f' and {len(stats) - 1} more' if len(stats) > 1 else ''}), which the functional inner loop "
                f"cannot use; build the backbone with norm='group' (or 'instance' / 'none')"
            )
        kind = self._rule_kind(check_bool(self.name, "learn_inner_lr", learn_inner_lr), inner_optimizer)
        options = self._rule_options(kind, lstm_hidden, lstm_preprocess_p)
        rule = build_inner_optimizer(self.name, kind, backbone, self.adapted_names(), self.inner_lr, options)
        self._check_rule(rule)
        self.rule_options = options
        self._rule_key = rule.state_key
        self.add_module(rule.state_key, rule)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give a subclass with presets or refused options the preset-checking constructor."""
        super().__init_subclass__(**kwargs)
        if (cls.PRESET or cls.REFUSED) and "__init__" not in cls.__dict__:
            cls.__init__ = _preset_init  # type: ignore[method-assign]

    def _rule_kind(self, learn_inner_lr: bool, inner_optimizer: str) -> str:
        kind = check_choice(self.name, "inner_optimizer", inner_optimizer, INNER_OPTIMIZERS)
        if learn_inner_lr and kind not in ("sgd", "metasgd"):
            raise ConfigError(
                f"{self.name}: learn_inner_lr=true is Meta-SGD's rule and cannot be combined with "
                f"inner_optimizer={kind!r}"
            )
        return "metasgd" if learn_inner_lr else kind

    def _rule_options(self, kind: str, hidden: int | None, p: float | None) -> dict[str, Any]:
        given = {k: v for k, v in (("lstm_hidden", hidden), ("lstm_preprocess_p", p)) if v is not None}
        if kind != "lstm":
            if given:
                raise ConfigError(f"{self.name}: {sorted(given)} apply to inner_optimizer='lstm' only, not {kind!r}")
            return {}
        return {"hidden": 20 if hidden is None else hidden, "preprocess_p": 10.0 if p is None else p}

    def _check_rule(self, rule: InnerOptimizer) -> None:
        if self.vectorize is True and not rule.supports_vmap:
            raise ConfigError(
                f"{self.name}: vectorize=true is not supported by inner_optimizer={rule.kind!r} (its update "
                "cannot run under torch.func.vmap); use vectorize=false or 'auto'"
            )
        if self.checkpoint_inner and not rule.supports_checkpoint:
            raise ConfigError(
                f"{self.name}: checkpoint_inner=true is not supported by inner_optimizer={rule.kind!r} (its "
                "update cannot be recomputed by torch.utils.checkpoint); use checkpoint_inner=false"
            )

    @property
    def inner_rule(self) -> InnerOptimizer:
        """The update rule of the inner loop (registered under its ``state_key``)."""
        return self._modules[self._rule_key]  # type: ignore[return-value]

    @property
    def steps(self) -> int:
        """Inner steps for the current mode (``inner_steps`` when training, else ``test_inner_steps``)."""
        return self.inner_steps if self.training else self.test_inner_steps

    def adapted_names(self) -> list[str]:
        """Names of the tensors the inner loop adapts (backbone parameters, then the head)."""
        backbone = [k for k, _ in self.backbone.named_parameters()] if self.inner_params == "all" else []
        return [*backbone, HEAD_WEIGHT, HEAD_BIAS]

    def run_inner_loop(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        n_classes: int,
        *,
        steps: int,
        first_order: bool,
        detach: bool,
    ) -> TaskParams:
        """Adapt to ``(images, labels)`` from the current meta-parameters.

        Args:
            images: ``(S, C, H, W)`` inner data.
            labels: ``(S,)`` int64 in ``[0, N)``.
            n_classes: ``N``.
            steps: Inner steps.
            first_order: Detach inner gradients.
            detach: Start from detached meta-parameters and return detached results (test time,
                Reptile); otherwise the result is differentiable with respect to them.
        """
        params: Params = dict(self.backbone.named_parameters())
        if detach:
            params = {k: v.detach() for k, v in params.items()}
        with gradients_enabled(), torch.no_grad() if detach else contextlib.nullcontext():
            # detached: autograd records nothing, not even the rule's own parameters (torch.func.vjp
            # still differentiates the inner loss at its own level)
            if images.is_inference() or labels.is_inference():
                images, labels = images.clone(), labels.clone()
            task = self._adapt(params, images, labels, n_classes, steps=steps,
                               first_order=first_order or detach, checkpoint=self.checkpoint_inner and not detach)
        if detach:
            task = TaskParams(
                {k: v.detach() for k, v in task.backbone.items()},
                task.head_weight.detach(),
                task.head_bias.detach(),
                task.loss.detach(),
                task.logits.detach(),
            )
        return task

    def _adapt(
        self,
        params: Params,
        images: torch.Tensor,
        labels: torch.Tensor,
        n_classes: int,
        *,
        steps: int,
        first_order: bool,
        checkpoint: bool = False,
    ) -> TaskParams:
        """:func:`adapt_task` with this method's backbone, buffers, head, inner-parameter settings and
        update rule."""
        return adapt_task(
            self.backbone,
            params,
            dict(self.backbone.named_buffers()),
            images,
            labels,
            n_classes,
            steps=steps,
            first_order=first_order,
            optimizer=self.inner_rule,
            head_init=self.head,
            adapt_backbone=self.inner_params == "all",
            checkpoint=checkpoint,
            on_step=self._on_inner_step,
        )

    def vectorized_batch(self, episodes: Sequence[Episode]) -> TaskBatch | None:
        """The stacked meta-batch when the vectorised path applies (``vectorize``, no checkpointing,
        one shape, images in the default layout, no second order through BatchNorm), else ``None``
        (the per-task loop runs)."""
        if not self.vectorize or (self.checkpoint_inner and not self.first_order) or len(episodes) < 2:
            return None
        if not self.inner_rule.supports_vmap:
            return None  # vectorize="auto" (True is refused at construction)
        if self.vectorize == "auto" and episodes[0].support_images.device.type != "cuda":
            return None
        tensors = (episodes[0].support_images, *self.backbone.parameters())
        if not all(t.is_contiguous() for t in tensors):
            return None  # channels-last weights or images: vmap's group_norm refuses the layout (torch 2.13)
        second_order_backbone = not self.first_order and self.inner_params == "all"
        if second_order_backbone and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.backbone.modules()):
            return None  # vmap's batch-norm double backward is wrong (module notes)
        return TaskBatch.stack(episodes)

    def batched_query_losses(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Query losses of every task after its inner loop, as one ``vmap`` over the task axis.

        Differentiable with respect to the meta-parameters exactly as :meth:`episode_loss` is (the
        meta-parameters and the update rule's parameters enter unbatched, so their gradients sum over the tasks).

        Args:
            batch: ``T`` stacked tasks.

        Returns:
            ``(T,)`` query cross-entropies and ``(T, M, N)`` query logits.
        """
        params: Params = dict(self.backbone.named_parameters())
        buffers: Params = dict(self.backbone.named_buffers())

        def task_loss(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor):
            task = self._adapt(params, sx, sy, batch.ways, steps=self.steps, first_order=self.first_order)
            logits = FunctionalClassifier(self.backbone, task, buffers).predict(qx)
            return F.cross_entropy(logits, qy), logits

        with gradients_enabled():
            return vmap(task_loss, randomness="different")(*batch[:4])

    def training_step(self, episodes: Sequence[Episode]) -> StepOutput:
        """Meta-gradients of the mean query loss into ``.grad``: one ``vmap`` over the tasks when
        they share a shape (see :meth:`vectorized_batch`), else the per-task loop of the base class."""
        batch = self.vectorized_batch(episodes)
        if batch is None:
            return super().training_step(episodes)
        losses, logits = self.batched_query_losses(batch)
        losses.mean().backward()
        return StepOutput(loss=losses.detach().float().mean(), accuracy=accuracy(logits, batch.query_labels))

    def adapt(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> FunctionalClassifier:
        """Fine-tune a copy of the parameters on the support set (``self.steps`` first-order steps)."""
        n_classes = support_classes(support_images, support_labels)
        task = self.run_inner_loop(
            support_images, support_labels, n_classes, steps=self.steps, first_order=True, detach=True
        )
        return FunctionalClassifier(self.backbone, task, dict(self.backbone.named_buffers()))

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Query cross-entropy after the inner loop, differentiable with respect to the meta-parameters."""
        task = self.run_inner_loop(
            episode.support_images,
            episode.support_labels,
            episode.ways,
            steps=self.steps,
            first_order=self.first_order,
            detach=False,
        )
        logits = FunctionalClassifier(self.backbone, task, dict(self.backbone.named_buffers())).predict(
            episode.query_images
        )
        return F.cross_entropy(logits, episode.query_labels), logits

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor keyword arguments (those in ``REFUSED`` left out; the LSTM's only for the LSTM)."""
        kind = self.inner_rule.kind
        hp = {
            "inner_steps": self.inner_steps,
            "test_inner_steps": self.test_inner_steps,
            "inner_lr": self.inner_lr,
            "first_order": self.first_order,
            "head": self.head,
            "inner_params": self.inner_params,
            "learn_inner_lr": kind == "metasgd",
            "inner_optimizer": kind,
            "vectorize": self.vectorize,
            "checkpoint_inner": self.checkpoint_inner,
        }
        if kind == "lstm":
            hp.update(lstm_hidden=self.rule_options["hidden"], lstm_preprocess_p=self.rule_options["preprocess_p"])
        return {k: v for k, v in hp.items() if k not in self.REFUSED}


@contextlib.contextmanager
def reporting_inner_steps(method: FewShotMethod, on_step: Callable[[int, int], None] | None) -> Iterator[None]:
    """Within the block, ``on_step(done, steps)`` after every inner step of ``method``'s inner loop (the
    clinician session shows the test-time adapt step by step). A method without an inner loop, or
    ``on_step=None``: nothing is reported.
    """
    if on_step is None or not isinstance(method, GradientBasedMethod):
        yield
        return
    previous, method._on_inner_step = method._on_inner_step, on_step
    try:
        yield
    finally:
        method._on_inner_step = previous


def _preset_init(self: GradientBasedMethod, backbone: nn.Module, **hyperparameters: Any) -> None:
    """Constructor of a family member with ``PRESET``/``REFUSED`` options: checks them, then runs the
    family's one constructor with the presets applied.

    Raises:
        ConfigError: A refused option (reported as the registry reports an unknown argument), or a
            preset option given another value.
    """
    for key in hyperparameters:
        if key in self.REFUSED:
            accepted = [k for k in inspect.signature(GradientBasedMethod.__init__).parameters
                        if k not in ("self", "backbone", *self.REFUSED)]
            raise ConfigError(f"method {self.name!r}: unknown argument {short_repr(key)}; accepted: {accepted}")
    for key, value in self.PRESET.items():
        given = hyperparameters.get(key, value)
        if type(given) is not type(value) or given != value:  # 1 is not True: it hides a typo in a config
            raise ConfigError(f"{self.name}: {key} is fixed to {value} for this method, got {hyperparameters[key]!r}")
    GradientBasedMethod.__init__(self, backbone, **{**hyperparameters, **self.PRESET})
