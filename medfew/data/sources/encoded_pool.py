"""Pools of frozen-encoder outputs: run a backbone's frozen lower blocks once per image, cache the maps.

Meta-training a pretrained network on a 2-core CPU is practical only if the frozen lower blocks are
not recomputed for every episode. :func:`encoded_pool` maps every image of an
:class:`~medfew.data.episodes.pool.ImagePool` through a frozen ``encode`` function (after the same
normalisation the sampler would apply) and returns a pool of the resulting feature maps, which the
episode sampler draws from like any other pool (with ``normalize=None``: the maps are already
normalised). Results live in the pool cache (memory and disk), keyed by the source pool's pixels and
the encoder's signature (architecture, pinned weights, frozen depth), so they are computed once per
machine.

Image-space augmentation cannot be applied to cached maps; training with a cache draws
un-augmented episodes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from medfew.data.episodes.pool import ImagePool
from medfew.data.sources.pool_cache import lookup, store

ENCODE_BATCH = 256


def pool_fingerprint(pool: ImagePool) -> str:
    """sha256 over a pool's pixels, labels, class names, name and split (hex, 40 characters)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([pool.name, pool.split, list(pool.class_names), list(pool.images.shape),
                              str(pool.images.dtype)]).encode())
    digest.update(pool.images.contiguous().numpy().tobytes())
    digest.update(pool.labels.contiguous().numpy().tobytes())
    return digest.hexdigest()[:40]


def encoded_pool(
    pool: ImagePool,
    *,
    encode: Callable[[torch.Tensor], torch.Tensor],
    signature: str,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = ENCODE_BATCH,
    cache: bool = True,
    progress: bool = False,
) -> ImagePool:
    """The pool with every image replaced by ``encode(normalize(image))``.

    Args:
        pool: Source pool, images ``(M, C, H, W)`` uint8 or float32.
        encode: Frozen map ``(B, C, H, W) float32 -> (B, C', H', W')`` (e.g. a backbone's ``prefix``);
            run under ``torch.no_grad()``.
        signature: Identifies ``encode`` exactly (architecture, weights checksum, depth): part of the
            cache key.
        normalize: Applied to each ``[0, 1]`` float batch before ``encode`` (what the sampler would do).
        batch_size: Images per ``encode`` call.
        cache: Use and fill the memory and disk pool cache.
        progress: Show a progress bar while encoding.

    Returns:
        A pool with float32 ``(M, C', H', W')`` maps and the source's labels, groups, names and
        provenance (plus the encoder signature).
    """
    key = hashlib.sha256(f"encoded|{pool_fingerprint(pool)}|{signature}".encode()).hexdigest()[:40]
    if cache:
        hit = lookup(key)
        if hit is not None:
            return hit
    chunks = []
    starts = range(0, len(pool), batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc=f"encode {pool.name}/{pool.split}", unit="batch", disable=not progress):
            batch = pool.as_float(torch.arange(start, min(start + batch_size, len(pool))))
            if normalize is not None:
                batch = normalize(batch)
            chunks.append(encode(batch).float().contiguous())
    result = ImagePool(
        images=torch.cat(chunks) if chunks else torch.zeros(0, 1, 1, 1),
        labels=pool.labels,
        class_names=pool.class_names,
        name=pool.name,
        groups=pool.groups,
        split=pool.split,
        provenance={**pool.provenance, "encoded_by": signature},
    )
    if cache:
        store(key, result)
    return result
