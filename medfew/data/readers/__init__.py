"""Image readers. TEMPORARY minimal version: the readers helper replaces this file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medfew.errors import ImageReadError


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as float32 ``(C, H, W)`` in ``[0, 1]``."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except Exception as exc:  # noqa: BLE001
        raise ImageReadError(path, f"not a readable image ({exc})") from exc
    return arr[None]
