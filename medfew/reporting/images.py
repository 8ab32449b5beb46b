"""PNG renderings for reports: a query thumbnail and a saliency overlay (pure numpy + Pillow)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from medfew.errors import ImageInputError

THUMBNAIL_SIDE = 256


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """float ``(C, H, W)`` in ``[0, 1]`` (C 1 or 3) -> uint8 ``(H, W, 3)``."""
    array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if array.ndim == 2:
        array = array[None]
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    return (array.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnail_png(image: np.ndarray, max_side: int = THUMBNAIL_SIDE) -> bytes:
    """PNG bytes of an image scaled so its longest side is ``max_side`` (aspect ratio kept).

    Args:
        image: float ``(C, H, W)`` or ``(H, W)`` in ``[0, 1]``.
        max_side: Longest side of the thumbnail in pixels.
    """
    picture = Image.fromarray(_to_rgb_uint8(image))
    scale = max_side / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    return _png(np.asarray(picture.resize(size, resample)))


def heat_colours(saliency: np.ndarray) -> np.ndarray:
    """``(H, W)`` in ``[0, 1]`` -> float ``(H, W, 3)`` RGB in ``[0, 1]``: blue (0) -> green -> yellow -> red (1)."""
    s = np.clip(np.asarray(saliency, dtype=np.float32), 0.0, 1.0)
    red = np.clip(2.0 * s - 0.5, 0.0, 1.0)
    green = np.clip(1.5 - np.abs(4.0 * s - 2.0), 0.0, 1.0)
    blue = np.clip(1.0 - 2.0 * s, 0.0, 1.0)
    return np.stack([red, green, blue], axis=-1)


def saliency_overlay_png(image: np.ndarray, saliency: np.ndarray, side: int = THUMBNAIL_SIDE, alpha: float = 0.45) -> bytes:
    """PNG bytes of a saliency map blended over the model input, scaled to ``side`` x ``side``.

    Args:
        image: float ``(C, S, S)`` in ``[0, 1]``, the image the map was computed on.
        saliency: float ``(S, S)`` in ``[0, 1]``.
        side: Output side in pixels.
        alpha: Opacity of the heat map (scaled by the saliency, so cold regions stay readable).
    """
    base = _to_rgb_uint8(image).astype(np.float32) / 255.0
    if base.shape[:2] != np.shape(saliency):
        raise ImageInputError(f"saliency {np.shape(saliency)} does not match image {base.shape[:2]}")
    weight = alpha * np.clip(np.asarray(saliency, dtype=np.float32), 0.0, 1.0)[..., None]
    blended = (1.0 - weight) * base + weight * heat_colours(saliency)
    picture = Image.fromarray((blended * 255.0 + 0.5).astype(np.uint8))
    return _png(np.asarray(picture.resize((side, side), Image.Resampling.BILINEAR)))


@dataclass(frozen=True)
class QueryImages:
    """The PNGs a report shows of one query, drawn once (by whoever shows them first).

    Attributes:
        thumbnail_png: PNG bytes of the query (:func:`thumbnail_png`).
        saliency_overlay_png: PNG bytes of the saliency overlay (:func:`saliency_overlay_png`), or ``None``.
    """

    thumbnail_png: bytes = field(repr=False)
    saliency_overlay_png: bytes | None = field(repr=False)


def query_images(image: np.ndarray, model_input: np.ndarray, saliency: np.ndarray | None) -> QueryImages:
    """Draw the thumbnail of a query and, when it has a saliency map, the overlay on its model input.

    Args:
        image: float ``(C, H, W)`` in ``[0, 1]``, the decoded query (``Prediction.image``).
        model_input: float ``(C, S, S)`` in ``[0, 1]``, what the model read (``Prediction.model_input``).
        saliency: float ``(S, S)`` in ``[0, 1]`` (``Prediction.saliency``), or ``None``.

    Returns:
        The :class:`QueryImages`.
    """
    overlay = None if saliency is None else saliency_overlay_png(model_input, saliency)
    return QueryImages(thumbnail_png=thumbnail_png(image), saliency_overlay_png=overlay)
