"""A DICOMweb client for the clinician's PACS: search (QIDO-RS), pull a series (WADO-RS), store (STOW-RS).

Built on ``dicomweb-client``; this module adds typed errors, the search filters a clinician uses and
series pulled as DICOM file bytes ready for :func:`medfew.diagnosis.load_input`::

    client = PacsClient(PacsSettings.load())
    matches = client.search(patient_id="PID-0001", modality="CR")
    scans = client.pull_series(matches[0].series_uid)        # [PulledInstance(name, data, ...), ...]
    client.store([report_bytes])                              # STOW-RS into the report's study

Every error names the server by its masked URL (never the login) and says what to do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session, create_session_from_auth
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from medfew.errors import (
    NoPixelDataError,
    PacsAuthError,
    PacsConnectionError,
    PacsError,
    PacsNotFoundError,
    PacsSettingsError,
)
from medfew.pacs.settings import PacsSettings

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)
"""WADO-RS media type: the instances as stored (no transcoding by the server; medfew's readers decode)."""
MAX_SERIES_INSTANCES = 1000
RETRY_ATTEMPTS = 2
"""Attempts per request (a refused connection, or HTTP 408 / 429 / 503 / 504, is tried once more)."""
_T = TypeVar("_T")
_DATE = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class SeriesMatch:
    """One series found by :meth:`PacsClient.search`, with its study.

    The patient fields are for the screen of the clinician who searched; never put them in a log.
    """

    study_uid: str
    series_uid: str
    modality: str = ""
    series_description: str = ""
    series_number: int | None = None
    instances: int | None = None
    patient_id: str = field(default="", repr=False)
    patient_name: str = field(default="", repr=False)
    study_date: str = ""
    accession_number: str = field(default="", repr=False)
    study_description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class PulledInstance:
    """One instance of a pulled series, as a DICOM file's bytes.

    Attributes:
        name: ``<SOPInstanceUID>.dcm`` (screen and file name; carries no patient data).
        data: The DICOM Part 10 file.
        study_uid: Its StudyInstanceUID (a report about it files into this study).
        series_uid: Its SeriesInstanceUID.
        sop_instance_uid: Its SOPInstanceUID.
    """

    name: str
    data: bytes = field(repr=False)
    study_uid: str
    series_uid: str
    sop_instance_uid: str

    @property
    def upload(self) -> tuple[str, bytes]:
        """``(name, data)``, the shape of an uploaded file."""
        return self.name, self.data


def study_date_filter(text: str) -> str:
    """A QIDO StudyDate filter from ``YYYYMMDD`` / ``YYYY-MM-DD``, or a range ``FROM..TO`` (either end open).

    Examples: ``2024-03-01`` -> ``20240301``; ``20240101..20241231`` -> ``20240101-20241231``;
    ``2024-01-01..`` -> ``20240101-``.

    Raises:
        PacsSettingsError: Not a date or a range of dates.
    """
    text = text.strip()
    ends = text.split("..") if ".." in text else [text]
    if len(ends) > 2:
        raise PacsSettingsError(f"study date {text[:40]!r}: give one date or a range FROM..TO")
    dates = [end.strip().replace("-", "") for end in ends]
    for date in dates:
        if date and not _DATE.match(date):
            raise PacsSettingsError(f"study date {text[:40]!r}: dates are YYYYMMDD or YYYY-MM-DD "
                                    "(a range: 20240101..20241231)")
    if not any(dates):
        raise PacsSettingsError("study date: give at least one end of the range")
    return "-".join(dates)


class PacsClient:
    """Search, pull and store through one DICOMweb server.

    Args:
        settings: Server URL and login (see :class:`PacsSettings`).
        max_instances: Refuse to pull a series with more instances than this.
    """

    def __init__(self, settings: PacsSettings, *, max_instances: int = MAX_SERIES_INSTANCES) -> None:
        self.settings = settings
        self.max_instances = max_instances
        if settings.user:
            session = create_session_from_auth(requests.auth.HTTPBasicAuth(settings.user, settings.password or ""))
        elif settings.token:
            session = create_session_from_auth(_BearerAuth(settings.token))
        else:
            session = create_session()
        self._web = DICOMwebClient(settings.url.rstrip("/"), session=session, timeout=settings.timeout)
        # one retry, soon: the default (5 attempts, exponential back-off) keeps a user waiting 30 s on a wrong URL
        self._web.set_http_retry_params(retry=True, max_attempts=RETRY_ATTEMPTS, wait_exponential_multiplier=250)

    def __repr__(self) -> str:
        return f"PacsClient({self.settings.display_url!r})"

    # ------------------------------------------------------------------ QIDO-RS
    def search(
        self,
        *,
        patient_id: str | None = None,
        accession_number: str | None = None,
        study_date: str | None = None,
        modality: str | None = None,
        limit: int = 100,
    ) -> list[SeriesMatch]:
        """The series of the studies that match every given filter (QIDO-RS, studies then their series).

        Args:
            patient_id: PatientID (exact; ``*`` wildcards allowed).
            accession_number: AccessionNumber.
            study_date: A date or range (see :func:`study_date_filter`).
            modality: Only series of this modality (``CT``, ``CR``, ``MR``...).
            limit: At most this many studies.

        Raises:
            PacsNotFoundError: Nothing matches.
            PacsConnectionError, PacsAuthError, PacsError: The server failed (see :meth:`_call`).
        """
        filters: dict[str, str] = {}
        if patient_id:
            filters["PatientID"] = patient_id.strip()
        if accession_number:
            filters["AccessionNumber"] = accession_number.strip()
        if study_date:
            filters["StudyDate"] = study_date_filter(study_date)
        if modality:
            filters["ModalitiesInStudy"] = modality.strip().upper()
        studies = self._call("search the studies", lambda: self._web.search_for_studies(
            search_filters=filters, limit=limit))
        matches: list[SeriesMatch] = []
        for study in studies:
            study_uid = _value(study, "0020000D")
            series_filters = {"Modality": filters["ModalitiesInStudy"]} if modality else {}
            found = self._call("search the series", lambda uid=study_uid, f=series_filters: (
                self._web.search_for_series(study_instance_uid=uid, search_filters=f)))
            matches += [_series_match(study, s) for s in found]
        if not matches:
            used = ", ".join(_FILTER_NAMES[k] + ("" if k in ("PatientID", "AccessionNumber") else f" {v}")
                             for k, v in filters.items()) or "no filter"
            raise PacsNotFoundError(f"no series on {self.settings.display_url} matches the search ({used})")
        return matches

    def find_series(self, series_uid: str) -> SeriesMatch:
        """The series with this SeriesInstanceUID (QIDO-RS), with its study.

        Raises:
            PacsNotFoundError: No such series on the server.
        """
        found = self._call("find the series", lambda: self._web.search_for_series(
            search_filters={"SeriesInstanceUID": series_uid.strip()}))
        if not found:
            raise PacsNotFoundError(f"series {series_uid[:64]} is not on {self.settings.display_url}")
        return _series_match(found[0], found[0])

    # ------------------------------------------------------------------ WADO-RS
    def fetch_series(self, series_uid: str, study_uid: str | None = None) -> list[Dataset]:
        """Every instance of a series as stored on the server (any SOP class), by InstanceNumber.

        Raises:
            PacsNotFoundError: No such series.
            PacsError: More than ``max_instances`` instances.
        """
        series = self.find_series(series_uid) if study_uid is None else None
        study_uid = study_uid or series.study_uid  # type: ignore[union-attr]
        if series is not None and series.instances is not None and series.instances > self.max_instances:
            raise PacsError(f"series {series_uid[:64]} holds {series.instances} instances; at most "
                            f"{self.max_instances} are pulled at once")
        datasets = self._call("pull the series", lambda: self._web.retrieve_series(
            study_uid, series_uid, media_types=ANY_TRANSFER_SYNTAX), missing=f"series {series_uid[:64]}")
        return sorted(datasets, key=lambda ds: int(ds.get("InstanceNumber", 0) or 0))

    def pull_series(self, series_uid: str, study_uid: str | None = None) -> list[PulledInstance]:
        """The image instances of a series as DICOM file bytes (support or query scans).

        Instances without pixel data in an image series (rare) are left out.

        Raises:
            NoPixelDataError: The series holds no image (a structured report, a PDF, a key-object note).
            PacsNotFoundError: No such series.
        """
        datasets = self.fetch_series(series_uid, study_uid)
        images = [ds for ds in datasets if any(k in ds for k in PIXEL_KEYWORDS)]
        if not images:
            modalities = sorted({str(ds.get("Modality", "?")) for ds in datasets}) or ["?"]
            raise NoPixelDataError(f"series {series_uid[:64]} ({'/'.join(modalities)}, {len(datasets)} instance(s)) "
                                   "holds no image to diagnose: choose an image series")
        return [_pulled(ds) for ds in images]

    # ------------------------------------------------------------------ STOW-RS
    def store(self, objects: Iterable[Dataset | bytes | str | Path]) -> list[str]:
        """Store DICOM objects (data sets, file bytes or paths) on the server; returns their SOPInstanceUIDs.

        Raises:
            PacsError: An object is not DICOM, or the server refused one (its UID named).
        """
        datasets = [_as_dataset(obj) for obj in objects]
        if not datasets:
            return []
        response = self._call("store", lambda: self._web.store_instances(datasets))
        failed = [str(item.get("ReferencedSOPInstanceUID", "?")) for item in response.get("FailedSOPSequence", [])]
        if failed:
            raise PacsError(f"{self.settings.display_url} refused to store {len(failed)} object(s): {failed[:5]}")
        return [str(ds.SOPInstanceUID) for ds in datasets]

    # ------------------------------------------------------------------ errors
    def _call(self, what: str, request: Callable[[], _T], *, missing: str | None = None) -> _T:
        """Run one DICOMweb request, turning transport and HTTP failures into typed errors.

        Args:
            what: The action, for messages ("search the studies").
            request: The ``dicomweb-client`` call.
            missing: What a 404 means not found (``None``: a 404 means a wrong URL).
        """
        url = self.settings.display_url
        try:
            return request()
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                raise PacsAuthError(f"{url} refused the login (HTTP {status}) when trying to {what}: check "
                                    "MEDFEW_PACS_USER / MEDFEW_PACS_PASSWORD (or the token) in the PACS "
                                    "settings") from None
            if status == 404 and missing:
                raise PacsNotFoundError(f"{missing} is not on {url}") from None
            if status == 404:
                raise PacsConnectionError(f"{url} answered 404 Not Found when trying to {what}: is it the "
                                          "DICOMweb root (e.g. http://host:8042/dicom-web)?") from None
            raise PacsError(f"{url} failed to {what} (HTTP {status})") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            kind = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "refused or unreachable"
            raise PacsConnectionError(f"cannot reach the PACS at {url} ({kind}) to {what}: check MEDFEW_PACS_URL "
                                      "and that the server is running") from None
        except requests.exceptions.RequestException as exc:
            raise PacsConnectionError(f"cannot talk to the PACS at {url} to {what} ({type(exc).__name__})") from None
        except (ValueError, KeyError, InvalidDicomError) as exc:
            raise PacsConnectionError(f"{url} did not answer as a DICOMweb server when trying to {what} "
                                      f"({type(exc).__name__}): is it the DICOMweb root?") from None


class _BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>`` (set on the request, never in dicomweb-client's logged headers)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


_FILTER_NAMES = {"PatientID": "patient id", "AccessionNumber": "accession number", "StudyDate": "study date",
                 "ModalitiesInStudy": "modality"}


def _value(item: dict[str, Any], tag: str) -> Any:
    """The first value of a DICOM JSON attribute, or ``""``."""
    values = item.get(tag, {}).get("Value") or [""]
    first = values[0]
    return first.get("Alphabetic", "") if isinstance(first, dict) else first


def _int(item: dict[str, Any], tag: str) -> int | None:
    value = _value(item, tag)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _series_match(study: dict[str, Any], series: dict[str, Any]) -> SeriesMatch:
    return SeriesMatch(
        study_uid=str(_value(series, "0020000D") or _value(study, "0020000D")),
        series_uid=str(_value(series, "0020000E")),
        modality=str(_value(series, "00080060")),
        series_description=str(_value(series, "0008103E")),
        series_number=_int(series, "00200011"),
        instances=_int(series, "00201209"),
        patient_id=str(_value(study, "00100020")),
        patient_name=str(_value(study, "00100010")),
        study_date=str(_value(study, "00080020")),
        accession_number=str(_value(study, "00080050")),
        study_description=str(_value(study, "00081030")),
    )


def _pulled(ds: Dataset) -> PulledInstance:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    sop = str(ds.SOPInstanceUID)
    return PulledInstance(name=f"{sop}.dcm", data=buffer.getvalue(), study_uid=str(ds.StudyInstanceUID),
                          series_uid=str(ds.SeriesInstanceUID), sop_instance_uid=sop)


def _as_dataset(obj: Dataset | bytes | str | Path) -> Dataset:
    """A data set read from a DICOM file, so ``dicomweb-client`` sends it with its preamble and ``DICM``
    prefix (a data set built in memory has neither, and the server would keep and serve it so)."""
    name = "<DICOM bytes>" if isinstance(obj, bytes) else "<DICOM data set>" if isinstance(obj, Dataset) else str(obj)
    try:
        if isinstance(obj, Dataset):
            buffer = BytesIO()
            obj.save_as(buffer, enforce_file_format=True)
            obj = buffer.getvalue()
        return dcmread(BytesIO(obj) if isinstance(obj, bytes) else obj)
    except (InvalidDicomError, OSError, EOFError, AttributeError, ValueError) as exc:
        raise PacsError(f"{name}: not a complete DICOM object, cannot store it ({type(exc).__name__})") from exc

