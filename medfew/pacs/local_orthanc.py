"""A local Orthanc PACS with DICOMweb, for trying medfew's PACS features and for the tests.

Runs Debian's ``/usr/sbin/Orthanc`` with its DICOMweb plugin on 127.0.0.1, a free HTTP port, the
DICOM port off, storage in a folder of your choice and a login (basic auth) on::

    python -m medfew.pacs.local_orthanc --storage /tmp/medfew-pacs --load ../shared/data/dicom_samples

prints the URL and writes a settings file (mode 600) with the generated password; ``export
MEDFEW_PACS_SETTINGS=<that file>`` and ``medfew pacs search`` finds the loaded studies.
``make pacs`` runs the same. The tests start it through :class:`LocalOrthanc` too.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import requests

from medfew.errors import PacsConnectionError, PacsError
from medfew.pacs.settings import PacsSettings, write_settings_file

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DEFAULT_USER = "medfew"


def missing_parts() -> list[str]:
    """The Orthanc pieces not installed here (empty when it can run)."""
    return [str(p) for p in (ORTHANC, DICOMWEB_PLUGIN) if not p.exists()]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def orthanc_config(storage: Path, port: int, user: str, password: str) -> dict[str, object]:
    """Orthanc's JSON configuration: HTTP on 127.0.0.1:``port`` only, DICOM port off, basic auth on."""
    return {
        "Name": "medfew-local-pacs",
        "StorageDirectory": str(storage / "db"),
        "IndexDirectory": str(storage / "db"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {user: password},
        "DicomServerEnabled": False,
        "HttpThreadsCount": 8,
        "ConcurrentJobs": 1,
        "StableAge": 2,
        "OrthancExplorerEnabled": True,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Host": f"127.0.0.1:{port}",
                     "Ssl": False},
    }


class LocalOrthanc:
    """A running local Orthanc (a context manager: it is stopped on exit).

    Args:
        storage: Folder for its database, configuration and log (created).
        port: HTTP port (default: a free one).
        user: The login to create.
        password: Its password (default: a random one).
        timeout: Seconds to wait for the server to answer.

    Raises:
        PacsConnectionError: Orthanc or its DICOMweb plugin is not installed, or it did not start.
    """

    def __init__(self, storage: str | Path, *, port: int | None = None, user: str = DEFAULT_USER,
                 password: str | None = None, timeout: float = 60.0) -> None:
        missing = missing_parts()
        if missing:
            raise PacsConnectionError(f"Orthanc is not installed ({', '.join(missing)} missing): "
                                      "apt-get install orthanc orthanc-dicomweb")
        self.storage = Path(storage).resolve()
        self.storage.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.user = user
        self._password = password or secrets.token_urlsafe(16)
        config = self.storage / "orthanc.json"
        config.write_text(json.dumps(orthanc_config(self.storage, self.port, user, self._password), indent=2))
        config.chmod(0o600)
        self.log = self.storage / "orthanc.log"
        with self.log.open("ab") as log:
            self._process = subprocess.Popen([str(ORTHANC), str(config)], stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
        try:
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """The DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``."""
        return f"http://127.0.0.1:{self.port}/dicom-web"

    @property
    def settings(self) -> PacsSettings:
        """Settings that log in to this server."""
        return PacsSettings(url=self.url, user=self.user, password=self._password)

    def settings_as(self, user: str, password: str) -> PacsSettings:
        """Settings for this server with another login (to test a refused login)."""
        return PacsSettings(url=self.url, user=user, password=password)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        auth = (self.user, self._password)
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PacsConnectionError(f"Orthanc exited with code {self._process.returncode}; see {self.log}")
            try:
                plugins = requests.get(f"http://127.0.0.1:{self.port}/plugins", auth=auth, timeout=2)
                if plugins.ok:
                    if "dicom-web" not in plugins.json():
                        raise PacsConnectionError(f"Orthanc started without its DICOMweb plugin; see {self.log}")
                    return
            except requests.exceptions.RequestException:
                pass
            time.sleep(0.2)
        raise PacsConnectionError(f"Orthanc did not answer on port {self.port} within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 10 s)."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dicom_files(folder: str | Path) -> list[Path]:
    """The ``.dcm`` files under ``folder``, sorted."""
    return sorted(p for p in Path(folder).rglob("*.dcm") if p.is_file())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """``python -m medfew.pacs.local_orthanc``: serve a local PACS until Ctrl-C."""
    from medfew.pacs.client import PacsClient

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", type=Path, default=Path(".cache/medfew-pacs"),
                        help="folder for the database and the settings file (kept between runs)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: a free one)")
    parser.add_argument("--load", type=Path, action="append", default=[],
                        help="folder of .dcm files to store into it (repeatable)")
    args = parser.parse_args(argv)
    try:
        with LocalOrthanc(args.storage, port=args.port) as server:
            settings_file = write_settings_file(args.storage.resolve() / "pacs-settings.toml", server.settings)
            client = PacsClient(server.settings)
            for folder in args.load:
                files = dicom_files(folder)
                stored = sum(len(client.store([f])) for f in files)
                print(f"stored {stored} DICOM file(s) from {folder}")
            print(f"Orthanc DICOMweb: {server.url}  (web viewer: http://127.0.0.1:{server.port}/app/explorer.html)")
            print(f"login in {settings_file} (mode 600); in another shell:\n"
                  f"  export MEDFEW_PACS_SETTINGS={settings_file}\n  medfew pacs search\nCtrl-C stops the server.")
            sys.stdout.flush()
            signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops Orthanc too, like Ctrl-C
            try:
                while server._process.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                print("stopping Orthanc")
    except PacsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
