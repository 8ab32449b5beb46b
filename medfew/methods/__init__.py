"""Few-shot methods behind a registry: ``build_method(name, backbone, **hyperparameters)``.

Importing this package registers ``protonet``, ``matchingnet``, ``maml``, ``fomaml``, ``metasgd``,
``l2o`` (the learned LSTM inner optimiser), ``reptile`` and ``baseline`` (Baseline++).
"""

from medfew.methods import baseline, l2o, maml, matchingnet, protonet, reptile  # noqa: F401  (registration)
from medfew.methods.base import AdaptedModel, FewShotMethod, StepOutput
from medfew.methods.registry import (
    build_method,
    list_methods,
    method_class,
    register_method,
)

__all__ = [
    "AdaptedModel",
    "FewShotMethod",
    "StepOutput",
    "build_method",
    "list_methods",
    "method_class",
    "register_method",
]
