"""One meta-iteration of each side: forward, backward and optimiser step, as each library is meant to be used.

``build_side(side, case)`` returns a :class:`Side` whose ``step(batch)`` runs one meta-iteration on a
meta-batch of synthetic tasks; each library is imported only inside its own builder, so a process
timing learn2learn never imports medfew and the other way round.

The peer loops follow the libraries' own examples: learn2learn ``clone()`` / ``adapt()`` per task
(``examples/vision/maml_miniimagenet.py``), higher's ``innerloop_ctx`` with ``copy_initial_weights=False``
(``examples/maml-omniglot.py``), easyfsl's ``process_support_set`` then ``forward`` (its episodic
training notebook). Each task's query loss is backpropagated right after its inner loop, divided by the
meta-batch size (the peers' own pattern, which frees every task's graph before the next). medfew runs
``method.training_step(episodes)``, its public training call, with the method's default
hyperparameters apart from the shared ones set here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.peers.cases import CHANNELS, IMAGE_SIZE, INNER_LR, OUTER_LR, Case

Task = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # support x, support y, query x, query y


@dataclass
class Side:
    """A built side: ``step(batch)`` runs one meta-iteration; ``info`` describes the setup (for the JSON).

    Attributes:
        step: Takes the side's own meta-batch (from ``prepare``) and runs forward, backward, optimiser step.
        prepare: Turns a list of :data:`Task` into what ``step`` takes (done once, outside the timing).
        info: Library versions, norm, hyperparameters.
    """

    step: Callable[[Any], None]
    prepare: Callable[[list[Task]], Any]
    info: dict[str, Any] = field(default_factory=dict)


def make_tasks(case: Case, n_batches: int, seed: int = 0) -> list[list[Task]]:
    """``n_batches`` meta-batches of synthetic tasks of the case's shape, identical in every process.

    Each task: support ``(N*K, 3, 28, 28)`` and query ``(N*Q, 3, 28, 28)`` standard-normal images, labels
    ``(N*K,)`` / ``(N*Q,)`` int64 grouped by class.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    support_y = torch.arange(case.ways).repeat_interleave(case.shots)
    query_y = torch.arange(case.ways).repeat_interleave(case.queries)
    return [
        [
            (torch.randn(len(support_y), *shape, generator=g), support_y,
             torch.randn(len(query_y), *shape, generator=g), query_y)
            for _ in range(case.meta_batch)
        ]
        for _ in range(n_batches)
    ]


def _identity(batch: list[Task]) -> list[Task]:
    return batch


def _version(package: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(package)


def _learn2learn(case: Case, algorithm: str) -> Side:
    import learn2learn as l2l

    from benchmarks.peers.conv4 import PlainConv4

    model = PlainConv4(CHANNELS, IMAGE_SIZE, n_classes=case.ways)
    if algorithm == "metasgd":
        meta = l2l.algorithms.MetaSGD(model, lr=INNER_LR, first_order=False)
    else:
        meta = l2l.algorithms.MAML(model, lr=INNER_LR, first_order=algorithm == "fomaml")
    optimizer = torch.optim.Adam(meta.parameters(), lr=OUTER_LR)

    def step(batch: list[Task]) -> None:
        optimizer.zero_grad(set_to_none=True)
        for sx, sy, qx, qy in batch:
            learner = meta.clone()
            for _ in range(case.inner_steps):
                learner.adapt(F.cross_entropy(learner(sx), sy))
            (F.cross_entropy(learner(qx), qy) / len(batch)).backward()
        optimizer.step()

    return Side(step, _identity, {"library": "learn2learn", "version": _version("learn2learn"),
                                  "model": "PlainConv4 + Linear(64, N), GroupNorm(32, 64)",
                                  "algorithm": type(meta).__name__, "first_order": algorithm == "fomaml"})


def _higher(case: Case) -> Side:
    import higher

    from benchmarks.peers.conv4 import PlainConv4

    model = PlainConv4(CHANNELS, IMAGE_SIZE, n_classes=case.ways)
    inner = torch.optim.SGD(model.parameters(), lr=INNER_LR)
    optimizer = torch.optim.Adam(model.parameters(), lr=OUTER_LR)

    def step(batch: list[Task]) -> None:
        optimizer.zero_grad(set_to_none=True)
        for sx, sy, qx, qy in batch:
            with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
                for _ in range(case.inner_steps):
                    diffopt.step(F.cross_entropy(fmodel(sx), sy))
                (F.cross_entropy(fmodel(qx), qy) / len(batch)).backward()
        optimizer.step()

    return Side(step, _identity, {"library": "higher", "version": _version("higher"),
                                  "model": "PlainConv4 + Linear(64, N), GroupNorm(32, 64)",
                                  "algorithm": "innerloop_ctx + SGD (second order)"})


def _easyfsl(case: Case, algorithm: str) -> Side:
    from easyfsl.methods import MatchingNetworks, PrototypicalNetworks

    from benchmarks.peers.conv4 import PlainConv4

    backbone = PlainConv4(CHANNELS, IMAGE_SIZE)
    if algorithm == "protonet":
        model, loss_fn = PrototypicalNetworks(backbone), F.cross_entropy
    else:  # full-context embeddings with one attention step per support image (easyfsl's fixed choice)
        model, loss_fn = MatchingNetworks(backbone, feature_dimension=backbone.feature_dim), F.nll_loss
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=OUTER_LR)

    def step(batch: list[Task]) -> None:
        optimizer.zero_grad(set_to_none=True)
        for sx, sy, qx, qy in batch:
            model.process_support_set(sx, sy)
            (loss_fn(model(qx), qy) / len(batch)).backward()
        optimizer.step()

    return Side(step, _identity, {"library": "easyfsl", "version": _version("easyfsl"),
                                  "model": "PlainConv4 (no head), GroupNorm(32, 64)", "algorithm": type(model).__name__})


def _medfew(case: Case, method_name: str) -> Side:
    from medfew.data.episodes.episode import Episode
    from medfew.methods import build_method
    from medfew.models import build_backbone

    backbone = build_backbone("conv4", in_channels=CHANNELS, image_size=IMAGE_SIZE, hidden=64, norm="group")
    hyper: dict[str, Any] = {}
    if case.inner_steps:
        hyper = {"inner_steps": case.inner_steps, "inner_lr": INNER_LR}
    elif method_name == "matchingnet":  # the same work as easyfsl: FCE, one attention step per support image
        hyper = {"fce": True, "fce_steps": case.ways * case.shots}
    method = build_method(method_name, backbone, **hyper).train()
    optimizer = torch.optim.Adam(method.parameters(), lr=OUTER_LR)
    names = tuple(f"c{i}" for i in range(case.ways))

    def prepare(batch: list[Task]) -> list[Episode]:
        return [Episode(sx, sy, qx, qy, names) for sx, sy, qx, qy in batch]

    def step(episodes: list[Episode]) -> None:
        optimizer.zero_grad(set_to_none=True)
        method.training_step(episodes)
        optimizer.step()

    return Side(step, prepare, {"library": "medfew", "version": _version("medfew"), "method": method.name,
                                "backbone": {"name": "conv4", **backbone.config()},
                                "hyperparameters": method.hyperparameters()})


BUILDERS: dict[str, Callable[[Case], Side]] = {
    "learn2learn:maml": lambda c: _learn2learn(c, "maml"),
    "learn2learn:fomaml": lambda c: _learn2learn(c, "fomaml"),
    "learn2learn:metasgd": lambda c: _learn2learn(c, "metasgd"),
    "higher:maml": _higher,
    "easyfsl:protonet": lambda c: _easyfsl(c, "protonet"),
    "easyfsl:matchingnet": lambda c: _easyfsl(c, "matchingnet"),
    "medfew:maml": lambda c: _medfew(c, "maml"),
    "medfew:fomaml": lambda c: _medfew(c, "fomaml"),
    "medfew:metasgd": lambda c: _medfew(c, "metasgd"),
    "medfew:protonet": lambda c: _medfew(c, "protonet"),
    "medfew:matchingnet": lambda c: _medfew(c, "matchingnet"),
}


def build_side(side: str, case: Case) -> Side:
    """Build side ``side`` (a key of :data:`BUILDERS`) for ``case``.

    Raises:
        KeyError: Unknown side (the message lists the known ones).
    """
    if side not in BUILDERS:
        raise KeyError(f"unknown side {side!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[side](case)
