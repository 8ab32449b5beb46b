"""How images are prepared for a model, the same at training, evaluation and diagnosis.

* :class:`Preprocessing` - the record a checkpoint stores (side, channels, normalisation), with
  :meth:`~Preprocessing.prepare` for one reader image and :meth:`~Preprocessing.normalize_batch` for a
  batch on its way into the model.
* :func:`preprocess_image` - one reader image ``(C, H, W)`` float ``[0, 1]`` -> ``(channels, S, S)`` float32.
* :func:`preprocess_batch` - a stack of same-size uint8 images (a MedMNIST split) -> ``(N, channels, S, S)``
  uint8, resized in chunks with one MONAI call per chunk.
* :func:`normalize_batch` - per-image, channel-wise z-score (MONAI ``NormalizeIntensity`` semantics) or none.

Geometry: the longest side is resized to ``S`` (MONAI ``Resize(size_mode="longest")``; ``"area"`` when
shrinking, which is anti-aliased, ``"bilinear"`` when enlarging) and the short side is zero-padded
symmetrically to ``S`` (``SpatialPad``), so the aspect ratio is kept. Channels: 1 -> 3 replicates grey;
3 -> 1 is the ITU-R BT.601 luminance ``0.299 R + 0.587 G + 0.114 B`` (what Pillow's ``convert("L")`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import Resize, SpatialPad

from medfew.errors import ConfigError

LUMINANCE_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
NORMALIZE_MODES: tuple[str, ...] = ("zscore", "unit")

_CHUNK = 4096  # images per MONAI call in preprocess_batch (bounds float32 memory to ~chunk * C * H * W * 4 bytes)
_STD_EPS = 1e-6


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a model: the same at training, evaluation and diagnosis.

    Attributes:
        image_size: Side ``S`` of the square model input.
        channels: 1 or 3.
        normalize: One of :data:`NORMALIZE_MODES`.
    """

    image_size: int
    channels: int
    normalize: str = "zscore"

    def prepare(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """One reader image ``(C, H, W)`` float ``[0, 1]`` -> float32 ``(channels, S, S)`` in ``[0, 1]``
        (:func:`preprocess_image`; not yet normalised)."""
        return preprocess_image(image, image_size=self.image_size, channels=self.channels)

    def normalize_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """A prepared ``(B, channels, S, S)`` batch -> the model's input (:func:`normalize_batch`)."""
        return normalize_batch(batch, self.normalize)


def preprocess_image(image: np.ndarray, *, image_size: int, channels: int) -> torch.Tensor:
    """Resize (keeping aspect ratio), pad and set the channel count of one reader image.

    Args:
        image: float ``(C, H, W)`` in ``[0, 1]``, ``C`` 1 or 3 (as :func:`medfew.data.readers.load_image` returns).
        image_size: Output side ``S``.
        channels: Output channels, 1 or 3.

    Returns:
        float32 ``(channels, S, S)`` in ``[0, 1]``.

    Raises:
        ConfigError: For a bad ``image_size`` / ``channels`` or an image of the wrong shape or dtype.
    """
    _check_sizes(image_size, channels)
    if not isinstance(image, (np.ndarray, torch.Tensor)) or image.ndim != 3 or image.shape[0] not in (1, 3):
        shape = getattr(image, "shape", None)
        raise ConfigError(
            f"image must be a (C, H, W) array with C 1 or 3, got shape {shape} ({type(image).__name__})"
        )
    x = torch.from_numpy(np.array(image)) if isinstance(image, np.ndarray) else image
    if not x.is_floating_point():
        raise ConfigError(f"image must be float in [0, 1], got dtype {x.dtype}; use preprocess_batch for uint8")
    x = x.to(torch.float32)
    if x.shape[0] == 3 and channels == 1:
        x = _luminance(x.unsqueeze(0)).squeeze(0)
    x = _resize_pad(x, image_size).clamp_(0.0, 1.0)
    if x.shape[0] == 1 and channels == 3:
        x = x.expand(3, -1, -1)
    return x.contiguous()


def preprocess_batch(images: np.ndarray, *, image_size: int, channels: int) -> torch.Tensor:
    """Resize, pad and set channels of a stack of same-size uint8 images, in batched MONAI calls.

    Args:
        images: uint8 ``(N, H, W)`` (greyscale) or ``(N, H, W, 3)`` (RGB), e.g. from ``read_medmnist``.
        image_size: Output side ``S``.
        channels: Output channels, 1 or 3.

    Returns:
        uint8 ``(N, channels, S, S)`` (rounded to the nearest level).

    Raises:
        ConfigError: For a bad ``image_size`` / ``channels`` or images of the wrong shape or dtype.
    """
    _check_sizes(image_size, channels)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ConfigError(
            f"images must be a uint8 numpy array, got {getattr(images, 'dtype', type(images).__name__)}"
        )
    if images.ndim == 3:
        batch = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    elif images.ndim == 4 and images.shape[-1] == 3:
        batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    else:
        raise ConfigError(f"images must be (N, H, W) or (N, H, W, 3), got shape {images.shape}")
    n, c, h, w = batch.shape
    out_c = 1 if channels == 1 else c
    if n == 0:
        return torch.zeros((0, channels, image_size, image_size), dtype=torch.uint8)
    if h == w == image_size and c == out_c:
        result = batch.contiguous()
    else:
        chunks = []
        for start in range(0, n, _CHUNK):
            x = batch[start : start + _CHUNK].to(torch.float32)
            if c == 3 and channels == 1:
                x = _luminance(x)
            k = x.shape[0]
            # MONAI spatial transforms take (channels, H, W): stack images on the channel axis, one call per chunk.
            y = _resize_pad(x.reshape(k * out_c, h, w), image_size)
            chunks.append(y.reshape(k, out_c, image_size, image_size).round_().clamp_(0, 255).to(torch.uint8))
        result = torch.cat(chunks)
    if out_c == 1 and channels == 3:
        result = result.expand(-1, 3, -1, -1).contiguous()
    return result


def normalize_batch(x: torch.Tensor, mode: str = "zscore") -> torch.Tensor:
    """Normalise intensities of a batch, per image.

    Args:
        x: float ``(B, C, H, W)`` in ``[0, 1]`` (any device; differentiable).
        mode: ``"zscore"``: each image and channel minus its mean, divided by its (population) standard
            deviation, a constant channel divided by 1 - MONAI ``NormalizeIntensity(channel_wise=True)``
            applied to every image, computed in one batched operation. ``"unit"``: unchanged.

    Returns:
        float ``(B, C, H, W)``.

    Raises:
        ConfigError: For another ``mode`` or a tensor that is not 4D floating point.
    """
    if mode not in NORMALIZE_MODES:
        raise ConfigError(f"unknown normalisation mode {mode!r}; expected one of {list(NORMALIZE_MODES)}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ConfigError(
            f"normalize_batch needs a float (B, C, H, W) tensor, got {getattr(x, 'dtype', type(x).__name__)} "
            f"of shape {tuple(getattr(x, 'shape', ()))}"
        )
    if mode == "unit":
        return x
    std, mean = torch.std_mean(x, dim=(2, 3), keepdim=True, correction=0)  # one pass over the batch
    std = torch.where(std < _STD_EPS, torch.ones_like(std), std)
    return (x - mean) / std


def _check_sizes(image_size: int, channels: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive int, got {image_size!r}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")


def _luminance(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, 1, H, W)`` BT.601 luma."""
    weights = torch.tensor(LUMINANCE_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _resize_pad(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, size, size)``: longest side to ``size`` (area when shrinking), zero-pad the rest."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    longest = max(h, w)
    if longest != size:
        mode = "area" if longest > size else "bilinear"
        resize = Resize(
            spatial_size=size, size_mode="longest", mode=mode, align_corners=None if mode == "area" else False
        )
        x = plain_tensor(resize(x))
    if x.shape[-2] != size or x.shape[-1] != size:
        x = plain_tensor(SpatialPad(spatial_size=(size, size), method="symmetric", mode="constant")(x))
    return x


def plain_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """MONAI returns ``MetaTensor``; callers get plain tensors."""
    if hasattr(x, "as_tensor"):
        return x.as_tensor()
    return torch.as_tensor(x)
