"""Read YAML from users safely: bounded depth, no aliases, numbers as a person means them.

PyYAML's ``safe_load`` never builds arbitrary objects, but it still accepts three things a config
should not carry:

- aliases (``*name``): a "billion laughs" document of shared references is tiny on disk and expands
  to gigabytes when anything walks it (a message, a JSON dump), so aliases are refused;
- unbounded nesting, which ends in ``RecursionError``: nesting beyond :data:`MAX_DEPTH` is refused;
- integers too long to convert (Python refuses more than 4300 digits with ``ValueError``).

It also reads ``1e-4`` as a number: YAML 1.1 (PyYAML) insists on a dot (``1.0e-4``) and would
otherwise hand the string ``"1e-4"`` to the config.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from medfew.errors import ConfigError

MAX_DEPTH = 32
"""Deepest nesting of mappings/sequences a user YAML document may have."""

_SCIENTIFIC = re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _UserLoader(yaml.SafeLoader):
    """``SafeLoader`` without aliases, with a depth bound, and reading ``1e-4`` as a float."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(f"line {mark.line + 1}: YAML aliases (*name) are not allowed here")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_UserLoader.add_implicit_resolver("tag:yaml.org,2002:float", _SCIENTIFIC, list("-+0123456789."))


def load_user_yaml(text: str) -> Any:
    """Parse one YAML document written by a user (a config file or a ``--set`` value).

    Args:
        text: The document.

    Returns:
        Plain Python data (dicts, lists, strings, numbers, booleans, ``None``).

    Raises:
        ConfigError: Not valid YAML, an alias, nesting deeper than :data:`MAX_DEPTH`, or a number too
            long to read; the message says which line where known.
    """
    try:
        return yaml.load(text, Loader=_UserLoader)
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({_short_yaml_error(exc)})") from None
    except ValueError as exc:  # int() beyond sys.get_int_max_str_digits()
        raise ConfigError(f"a number too long to read ({str(exc)[:80]})") from None
    except RecursionError:  # pragma: no cover - the depth bound comes first
        raise ConfigError(f"nested deeper than {MAX_DEPTH} levels") from None


def _short_yaml_error(exc: yaml.YAMLError) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."
