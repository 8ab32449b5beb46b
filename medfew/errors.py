"""Typed exceptions for medfew.

Every error is a ``ValueError`` subclass so callers that only know the standard library can still
catch it, and every message names the offending value (file, key, class, count) so a user can act
on it without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class MedfewError(ValueError):
    """Base class of all medfew errors."""


class ImageReadError(MedfewError):
    """An image file could not be read.

    Attributes:
        path: The file that failed.
        reason: A short human-readable reason, without the path.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedCompressionError(ImageReadError):
    """A compressed DICOM whose transfer syntax no installed decoder handles."""


class ImageTooLargeError(ImageReadError):
    """An image whose decoded size would exceed the memory limit (decompression bomb guard)."""


class ImageTooSmallError(ImageReadError):
    """An image smaller than the minimum usable size."""


class ManifestError(MedfewError):
    """A dataset manifest (CSV, YAML or folder) is invalid.

    Attributes:
        source: The manifest file or folder.
        row: The 1-based data row (CSV) or entry that is wrong, when known.
    """

    def __init__(self, source: str | Path, message: str, row: int | None = None) -> None:
        self.source = str(source)
        self.row = row
        where = f"{self.source}, row {row}" if row is not None else self.source
        super().__init__(f"{where}: {message}")


class DatasetNotFoundError(MedfewError):
    """A named dataset is unknown, or its files are missing from the data root."""


class EpisodeError(MedfewError):
    """An episode could not be built or is inconsistent."""


class NotEnoughImagesError(EpisodeError):
    """A class holds fewer (group-disjoint) images than an episode asks for."""


class ConfigError(MedfewError):
    """A configuration key or value is invalid. The message names the key."""


class CheckpointError(MedfewError):
    """A checkpoint is missing, corrupt, unsafe or does not match the model."""


class RegistryError(MedfewError):
    """An unknown name was asked of a registry (backbone, method, dataset)."""


class DiagnosisError(MedfewError):
    """A clinician's diagnosis session was used wrongly (see the subclasses)."""


class SupportSetError(DiagnosisError):
    """A support set cannot be adapted to: fewer than two classes, or a class without scans."""


class NotAdaptedError(DiagnosisError):
    """``diagnose`` was called before ``adapt``, or after the support set changed."""


class ImageInputError(DiagnosisError):
    """An image given to a session is of an unsupported type or shape."""


class PacsError(MedfewError):
    """A DICOMweb (PACS) request failed; the message names the server (credentials masked)."""


class PacsSettingsError(PacsError, ConfigError):
    """The PACS settings are missing or invalid (no URL, a bad settings file, a malformed search)."""


class PacsConnectionError(PacsError):
    """The PACS server cannot be reached, or its URL is not a DICOMweb service."""


class PacsAuthError(PacsError):
    """The PACS server refused the login (HTTP 401 or 403)."""


class PacsNotFoundError(PacsError):
    """A search matched nothing, or the series / study asked for is not on the server."""


class NoPixelDataError(PacsError):
    """A series holds no image (e.g. a structured report or a PDF series): nothing to diagnose."""


class ModelOutputError(DiagnosisError):
    """The model produced non-finite (NaN or infinite) features or scores: a broken checkpoint."""
