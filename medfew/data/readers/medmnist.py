"""Read one split of a MedMNIST ``.npz`` (``{split}_images`` uint8, ``{split}_labels``) with its keys validated."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from medfew.errors import ConfigError, DatasetNotFoundError, ImageReadError

MEDMNIST_SPLITS: tuple[str, ...] = ("train", "val", "test")


def read_medmnist(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load the images and labels of one split of a MedMNIST 2D file.

    Args:
        path: The ``.npz`` file, e.g. ``<data_root>/medmnist/organamnist.npz``.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        ``(images, labels)``: uint8 ``(N, H, W)`` (greyscale) or ``(N, H, W, 3)`` (RGB), and int64 ``(N,)``.

    Raises:
        ConfigError: For another ``split``.
        DatasetNotFoundError: When the file does not exist.
        ImageReadError: When the file is not an ``.npz``, a key is missing, or the arrays have the wrong
            dtype or shape (multi-label subsets such as ChestMNIST are refused); the message names the
            file and the key.
    """
    if split not in MEDMNIST_SPLITS:
        raise ConfigError(f"MedMNIST split must be one of {list(MEDMNIST_SPLITS)}, got {split!r}")
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: MedMNIST file not found")
    image_key, label_key = f"{split}_images", f"{split}_labels"
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = sorted(archive.files)
            for key in (image_key, label_key):
                if key not in archive.files:
                    raise ImageReadError(path, f"missing key {key!r} in MedMNIST file (keys present: {keys})")
            images = archive[image_key]
            labels = archive[label_key]
    except ImageReadError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ImageReadError(path, f"not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    _check_images(path, image_key, images)
    return images, _check_labels(path, label_key, labels, len(images))


def _check_images(path: Path, key: str, images: np.ndarray) -> None:
    if images.dtype != np.uint8:
        raise ImageReadError(path, f"{key!r} must be uint8, got {images.dtype}")
    grey = images.ndim == 3
    rgb = images.ndim == 4 and images.shape[-1] == 3
    if not (grey or rgb):
        raise ImageReadError(path, f"{key!r} must be (N, H, W) or (N, H, W, 3), got shape {images.shape}")


def _check_labels(path: Path, key: str, labels: np.ndarray, n: int) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise ImageReadError(
            path, f"{key!r} has shape {labels.shape}: multi-label MedMNIST subsets are not supported"
        )
    if labels.ndim not in (1, 2):
        raise ImageReadError(path, f"{key!r} must be (N,) or (N, 1), got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ImageReadError(path, f"{key!r} must hold integers, got {labels.dtype}")
    flat = labels.reshape(-1).astype(np.int64)
    if flat.shape[0] != n:
        raise ImageReadError(path, f"{key!r} has {flat.shape[0]} labels for {n} images")
    if flat.size and flat.min() < 0:
        raise ImageReadError(path, f"{key!r} holds negative labels (min {int(flat.min())})")
    return flat
