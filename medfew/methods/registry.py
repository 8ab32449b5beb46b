"""The method registry: ``build_method(name, backbone, **hyperparameters)``.

A checkpoint stores ``method.name`` and ``method.hyperparameters()`` beside the weights and rebuilds
with ``build_method(name, backbone, **hyperparameters)`` then ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from medfew.methods.base import FewShotMethod
from medfew.models.registry import Registry, check_kwargs

M = TypeVar("M", bound=type[FewShotMethod])

METHODS: Registry[type[FewShotMethod]] = Registry("method")


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator registering a :class:`FewShotMethod` subclass under ``name`` (sets its ``name``)."""

    def decorator(cls: M) -> M:
        METHODS.register(name)(cls)
        cls.name = name
        return cls

    return decorator


def build_method(name: str, backbone: nn.Module, **hyperparameters: Any) -> FewShotMethod:
    """Build a registered method around ``backbone``.

    Args:
        name: A name from :func:`list_methods`.
        backbone: A :class:`~medfew.models.Backbone` (``(B, C, H, W) -> (B, feature_dim)``).
        **hyperparameters: The method's keyword arguments (see each class).

    Raises:
        RegistryError: Unknown ``name`` (the message lists the known names and a close match).
        ConfigError: An unknown, missing or invalid hyperparameter (named in the message).
    """
    cls = METHODS.get(name)
    check_kwargs(f"method {name!r}", cls, hyperparameters, skip=1)
    return cls(backbone, **hyperparameters)


def method_class(name: str) -> type[FewShotMethod]:
    """The class registered as ``name`` (e.g. to inspect which hyperparameters it takes).

    Raises:
        RegistryError: Unknown ``name``.
    """
    return METHODS.get(name)


def list_methods() -> list[str]:
    """Names of the registered methods, sorted."""
    return METHODS.names()
