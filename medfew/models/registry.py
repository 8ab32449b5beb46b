"""A small name -> factory registry (timm style) and the backbone registry built on it.

``build_backbone("conv4", in_channels=1, image_size=28, hidden=32)`` looks the name up, checks the
keyword arguments against the factory's signature (an unknown key is an error, never silently
ignored) and returns a :class:`~medfew.models.base.Backbone`. A checkpoint rebuilds the same
network with ``build_backbone(backbone.name, **backbone.config())``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from medfew.errors import ConfigError, RegistryError
from medfew.messages import close_match_hint, short_repr
from medfew.models.base import Backbone
from medfew.models.pretrained import load_weights_file

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Names mapped to factories (classes or functions) of one kind of object.

    Args:
        kind: What is registered, used in error messages (``"backbone"``, ``"method"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering a factory under ``name``; a name can be registered only once."""

        def decorator(factory: T) -> T:
            if name in self._entries:
                raise RegistryError(f"{self.kind} {name!r} is already registered by {self._entries[name]!r}")
            self._entries[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> T:
        """The factory registered as ``name``.

        Raises:
            RegistryError: ``name`` is unknown; the message lists the known names and a close match.
        """
        if name not in self._entries:
            raise RegistryError(
                f"unknown {self.kind} {short_repr(name)}{close_match_hint(name, self._entries)}; "
                f"known {self.kind}s: {self.names()}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def check_kwargs(owner: str, factory: Callable[..., Any], kwargs: dict[str, Any], skip: int = 0) -> None:
    """Refuse keyword arguments that ``factory`` does not take, and required ones that are missing.

    The signature checked is the first ``__init__`` in a class's MRO that does not take ``**kwargs``
    (so a subclass that forwards ``**hp`` to its parent is checked against the parent).

    Args:
        owner: Name used in the message (``"backbone 'conv4'"``).
        factory: The class or function to be called.
        kwargs: The keyword arguments that will be passed.
        skip: Leading positional parameters supplied by the caller (e.g. 1 for a method's backbone).

    Raises:
        ConfigError: Naming the unknown or missing key and the accepted keys.
    """
    signature = _signature(factory)
    params = list(signature.parameters.values())[skip:]
    accepted = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"{owner}: unknown argument {short_repr(key)}{close_match_hint(key, accepted)}; accepted: {accepted}"
            )
    missing = [p.name for p in params if p.name in accepted and p.default is p.empty and p.name not in kwargs]
    if missing:
        raise ConfigError(f"{owner}: missing required argument(s) {missing}")


def _signature(factory: Callable[..., Any]) -> inspect.Signature:
    if inspect.isclass(factory):
        for cls in factory.__mro__:
            init = cls.__dict__.get("__init__")
            if init is None:
                continue
            signature = inspect.signature(init)
            if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
                return signature.replace(parameters=list(signature.parameters.values())[1:])  # drop self
        return inspect.signature(factory)
    return inspect.signature(factory)


BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")


def register_backbone(name: str) -> Callable[[T], T]:
    """Class decorator registering a :class:`Backbone` subclass under ``name`` (sets its ``name``)."""

    def decorator(factory: T) -> T:
        BACKBONES.register(name)(factory)
        if inspect.isclass(factory):
            factory.name = name
        return factory

    return decorator


def build_backbone(
    name: str, *, in_channels: int = 3, image_size: int = 28, weights: str | Path | None = None, **kwargs: Any
) -> Backbone:
    """Build a registered backbone.

    Args:
        name: A name from :func:`list_backbones`.
        in_channels: Channels ``C`` of the input images.
        image_size: Side ``S`` of the (square) input images the network is built for.
        weights: A safetensors file of the user's own weights, loaded after construction with
            :func:`~medfew.models.pretrained.load_weights_file` (not part of ``config()``).
        **kwargs: Backbone-specific options (e.g. ``hidden``, ``widths``, ``norm``).

    Returns:
        A module mapping ``(B, C, S, S) -> (B, feature_dim)``.

    Raises:
        RegistryError: Unknown ``name``.
        ConfigError: An unknown or invalid option, or ``weights`` whose keys or shapes do not fit.
        CheckpointError: ``weights`` is missing, pickle-based or unreadable.
    """
    factory = BACKBONES.get(name)
    kwargs = {"in_channels": in_channels, "image_size": image_size, **kwargs}
    check_kwargs(f"backbone {name!r}", factory, kwargs)
    backbone = factory(**kwargs)
    if not isinstance(backbone, Backbone):
        raise RegistryError(f"backbone {name!r} built a {type(backbone).__name__}, not a Backbone")
    if weights is not None:
        load_weights_file(backbone, weights)
    return backbone


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return BACKBONES.names()
