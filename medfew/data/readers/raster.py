"""PNG / JPEG / TIFF / BMP through Pillow -> float32 ``(C, H, W)`` in ``[0, 1]``.

Greyscale stays one channel, colour becomes RGB:

* ``1``, ``L``: / 255; ``I;16*``: / 65535; ``I`` (32-bit): / ``2**bits - 1`` from the file's bit depth
  when it is at most 16 (PNG, TIFF *BitsPerSample*), else min / max; ``F``: unchanged when already in
  ``[0, 1]``, else min / max.
* ``P``: through its palette, one channel when the palette is grey; ``LA`` / ``RGBA`` / ``PA``: composited
  on black (premultiplied ``La`` / ``RGBa``: alpha dropped); ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: to RGB.
* EXIF orientation is applied. Multi-page TIFFs follow the frame policy.

Size is checked from the header before decoding; Pillow's own bomb guard (``Image.MAX_IMAGE_PIXELS``,
left as the process set it) also applies and is reported as :class:`ImageTooLargeError`.
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medfew.data.readers.frames import FrameAccumulator, frame_index
from medfew.data.readers.limits import check_dimensions
from medfew.data.readers.options import ReadOptions
from medfew.data.readers.source import Source
from medfew.data.readers.window import require_finite, scale_by_range, scale_min_max
from medfew.errors import ImageReadError, ImageTooLargeError

_TO_RGB = frozenset({"CMYK", "YCbCr", "LAB", "HSV", "RGBX"})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)


def read_raster(source: Source, options: ReadOptions) -> np.ndarray:
    """Read a PNG, JPEG, TIFF or BMP file.

    Args:
        source: The file.
        options: Frame policy and size limits (``window`` does not apply to raster images: a warning).

    Returns:
        float32 ``(C, H, W)`` in ``[0, 1]``, ``C`` 1 or 3.

    Raises:
        ImageReadError: Unreadable, truncated or corrupt data; frame out of range.
        ImageTooLargeError: Above ``options.max_pixels`` by the header, or Pillow's bomb guard.
        ImageTooSmallError: A side below ``options.min_size``.
    """
    name = source.name
    if options.window is not None:
        warnings.warn(f"{name}: window ignored for a raster image (it has no modality values)", stacklevel=4)
    with source.open() as fp:
        try:
            im = Image.open(fp)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(
                name, f"image too large for Pillow's decompression-bomb guard ({exc})"
            ) from exc
        except UnidentifiedImageError as exc:
            raise ImageReadError(name, "corrupt image header: Pillow cannot identify it") from exc
        except _DECODE_ERRORS as exc:
            raise ImageReadError(name, f"corrupt image header ({type(exc).__name__}: {exc})") from exc
        with im:
            width, height = im.size
            n_frames = int(getattr(im, "n_frames", 1) or 1)
            check_dimensions(
                name,
                rows=height,
                cols=width,
                frames=n_frames,
                samples=len(im.getbands()),
                max_pixels=options.max_pixels,
                min_size=options.min_size,
            )
            index = frame_index(options.frame, n_frames, name)
            if index is not None:
                return _page(im, index, name)
            acc = FrameAccumulator(str(options.frame))
            for i in range(n_frames):
                acc.add(_page(im, i, name), name)
            return acc.result().astype(np.float32)


def _page(im: Image.Image, index: int, name: str) -> np.ndarray:
    """Decode page ``index`` and convert it to ``(C, H, W)`` in ``[0, 1]``."""
    try:
        im.seek(index)
        im.load()
        page = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(name, f"image too large for Pillow's decompression-bomb guard ({exc})") from exc
    except _DECODE_ERRORS as exc:
        raise ImageReadError(name, f"truncated or corrupt image data ({type(exc).__name__}: {exc})") from exc
    return _to_unit(page, im, name)


def _to_unit(page: Image.Image, original: Image.Image, name: str) -> np.ndarray:
    mode = page.mode
    if mode == "1":
        return _grey(np.asarray(page.convert("L")), 255)
    if mode == "L":
        return _grey(np.asarray(page), 255)
    if mode.startswith("I;16"):
        return _grey(np.asarray(page), 65535)
    if mode == "I":
        bits = _bit_depth(original)
        arr = np.asarray(page)
        return (scale_by_range(arr, 2**bits - 1) if bits else scale_min_max(arr))[None]
    if mode == "F":
        arr = np.asarray(page, dtype=np.float64)
        require_finite(arr, name)
        finite = arr[np.isfinite(arr)]
        inside = finite.size and finite.min() >= 0.0 and finite.max() <= 1.0
        return (scale_by_range(arr, 1.0) if inside else scale_min_max(arr))[None]
    if mode in ("P", "PA"):
        return _palette(page)
    if mode == "LA":
        la = np.asarray(page, dtype=np.float64)
        return _grey(la[..., 0] * la[..., 1] / 255.0, 255)
    if mode == "La":
        return _grey(np.asarray(page)[..., 0], 255)
    if mode == "RGB":
        return _rgb(np.asarray(page))
    if mode == "RGBA":
        rgba = np.asarray(page, dtype=np.float64)
        return _rgb(rgba[..., :3] * rgba[..., 3:4] / 255.0)
    if mode == "RGBa":
        return _rgb(np.asarray(page)[..., :3])
    if mode in _TO_RGB:
        return _rgb(np.asarray(page.convert("RGB")))
    raise ImageReadError(name, f"unsupported Pillow image mode {mode!r}")


def _palette(page: Image.Image) -> np.ndarray:
    has_alpha = page.mode == "PA" or "transparency" in page.info
    rgba = np.asarray(page.convert("RGBA"), dtype=np.float64)
    rgb = rgba[..., :3] * (rgba[..., 3:4] / 255.0) if has_alpha else rgba[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return _grey(rgb[..., 0], 255)
    return _rgb(rgb)


def _bit_depth(im: Image.Image) -> int | None:
    """The stored bit depth of a 32-bit-mode image when the file says it is at most 16, else ``None``."""
    if im.format == "PNG":
        return 16
    tags = getattr(im, "tag_v2", None)
    if tags is not None:
        bits = tags.get(258)
        bits = bits[0] if isinstance(bits, tuple) else bits
        if isinstance(bits, int) and 0 < bits <= 16:
            return bits
    return None


def _grey(arr: np.ndarray, high: float) -> np.ndarray:
    return scale_by_range(arr, high)[None]


def _rgb(arr: np.ndarray) -> np.ndarray:
    return scale_by_range(arr, 255).transpose(2, 0, 1)
