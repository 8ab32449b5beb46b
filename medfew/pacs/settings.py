"""Where the PACS is and how to log in: :class:`PacsSettings`, from the environment or a settings file.

Credentials come only from the environment (``MEDFEW_PACS_URL``, ``MEDFEW_PACS_USER``,
``MEDFEW_PACS_PASSWORD``, ``MEDFEW_PACS_TOKEN``) or from a TOML settings file named by
``MEDFEW_PACS_SETTINGS`` (default ``~/.config/medfew/pacs.toml``)::

    url = "http://127.0.0.1:8042/dicom-web"
    user = "alice"
    password = "..."        # or: token = "..." (sent as "Authorization: Bearer ...")

Environment variables win over the file. Never from a report, a log or the repository: the password
and token are hidden from ``repr`` and every message shows :attr:`PacsSettings.display_url`, the URL
without any ``user:password@`` part.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from medfew.errors import PacsSettingsError

ENV_URL = "MEDFEW_PACS_URL"
ENV_USER = "MEDFEW_PACS_USER"
ENV_PASSWORD = "MEDFEW_PACS_PASSWORD"
ENV_TOKEN = "MEDFEW_PACS_TOKEN"
ENV_SETTINGS = "MEDFEW_PACS_SETTINGS"
DEFAULT_SETTINGS_FILE = Path("~/.config/medfew/pacs.toml")
_KEYS = ("url", "user", "password", "token", "timeout")


def mask_url(url: str) -> str:
    """``url`` without its ``user:password@`` part (for messages), query string dropped."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparseable URL>"


@dataclass(frozen=True)
class PacsSettings:
    """A DICOMweb server and its login.

    Attributes:
        url: Root of the DICOMweb service (e.g. ``http://127.0.0.1:8042/dicom-web``), http(s) only.
        user: HTTP basic-auth user, or ``None``.
        password: Its password (hidden from ``repr``), or ``None``.
        token: A bearer token instead of user / password (hidden from ``repr``), or ``None``.
        timeout: Seconds to wait for the server's answer.
    """

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    timeout: float = 30.0

    def __post_init__(self) -> None:
        parts = urlsplit(str(self.url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PacsSettingsError(f"the PACS URL must start with http:// or https:// and name a host, got "
                                    f"{mask_url(str(self.url))[:200]!r}")
        if parts.username or parts.password:
            raise PacsSettingsError(f"put the PACS login in {ENV_USER} / {ENV_PASSWORD} (or the settings file), "
                                    f"not in the URL {mask_url(self.url)}")
        if self.password and not self.user:
            raise PacsSettingsError(f"a PACS password without a user: set {ENV_USER} too")
        if self.token and self.user:
            raise PacsSettingsError("give the PACS either a user and password or a token, not both")
        if not (isinstance(self.timeout, int | float) and self.timeout > 0):
            raise PacsSettingsError(f"the PACS timeout must be a positive number of seconds, got {self.timeout!r}")

    @property
    def display_url(self) -> str:
        """The URL for messages (no credentials, no query string)."""
        return mask_url(self.url)

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, settings_file: str | Path | None = None) -> PacsSettings:
        """Settings from the environment, over the settings file.

        Args:
            env: The environment (default ``os.environ``).
            settings_file: A TOML file (default ``$MEDFEW_PACS_SETTINGS``, else
                ``~/.config/medfew/pacs.toml`` when it exists).

        Raises:
            PacsSettingsError: No URL anywhere, an unreadable or invalid settings file, or an invalid value.
        """
        env = os.environ if env is None else env
        explicit = settings_file or env.get(ENV_SETTINGS)
        path = Path(explicit).expanduser() if explicit else DEFAULT_SETTINGS_FILE.expanduser()
        values = _read_file(path) if (explicit or path.is_file()) else {}
        for key, name in (("url", ENV_URL), ("user", ENV_USER), ("password", ENV_PASSWORD), ("token", ENV_TOKEN)):
            if env.get(name):
                values[key] = env[name]
        if not values.get("url"):
            raise PacsSettingsError(f"no PACS configured: set {ENV_URL} (and {ENV_USER} / {ENV_PASSWORD} if the "
                                    f"server needs a login), or {ENV_SETTINGS} to a settings file")
        return cls(**values)


def _read_file(path: Path) -> dict[str, object]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PacsSettingsError(f"{path}: cannot read the PACS settings file ({type(exc).__name__})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PacsSettingsError(f"{path}: not a valid TOML settings file") from exc  # no excerpt: it holds a password
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise PacsSettingsError(f"{path}: unknown key(s) {[k[:40] for k in unknown]}; known keys are {list(_KEYS)}")
    bad = [k for k in ("url", "user", "password", "token") if k in data and not isinstance(data[k], str)]
    if bad:
        raise PacsSettingsError(f"{path}: {bad} must be strings")
    return dict(data)


def write_settings_file(path: str | Path, settings: PacsSettings) -> Path:
    """Write ``settings`` as a TOML file readable by its owner only (mode 600).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"url = {_toml_string(settings.url)}"]
    for key in ("user", "password", "token"):
        value = getattr(settings, key)
        if value:
            lines.append(f"{key} = {_toml_string(value)}")
    lines.append(f"timeout = {float(settings.timeout)}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
