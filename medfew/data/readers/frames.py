"""The multi-frame policy: which frame (slice, page) of a multi-frame image becomes the 2D image."""

from __future__ import annotations

import numpy as np

from medfew.errors import ConfigError, ImageReadError

FRAME_POLICIES: tuple[str, ...] = ("middle", "first", "mean", "max")
"""Named policies; an ``int`` (negative counts from the end) picks one frame."""

FramePolicy = str | int


def validate_frame(frame: FramePolicy) -> None:
    """Check a ``frame`` argument.

    Raises:
        ConfigError: For an unknown policy name or a value of another type.
    """
    if isinstance(frame, bool) or not isinstance(frame, (str, int)):
        raise ConfigError(f"frame must be one of {list(FRAME_POLICIES)} or an int index, got {frame!r}")
    if isinstance(frame, str) and frame not in FRAME_POLICIES:
        raise ConfigError(
            f"unknown frame policy {frame!r}; expected one of {list(FRAME_POLICIES)} or an int index"
        )


def frame_index(frame: FramePolicy, n_frames: int, name: str) -> int | None:
    """The one frame to decode, or ``None`` when the policy reduces over all frames.

    Args:
        frame: ``"middle"`` (``n_frames // 2``), ``"first"``, ``"mean"``, ``"max"`` or an int index.
        n_frames: Frames in the file (at least 1).
        name: The file name, used in the error.

    Returns:
        A non-negative index in ``[0, n_frames)``, or ``None`` for ``"mean"`` and ``"max"`` (with more
        than one frame).

    Raises:
        ConfigError: For an invalid ``frame``.
        ImageReadError: When an int index is out of range.
    """
    validate_frame(frame)
    if isinstance(frame, int):
        if not -n_frames <= frame < n_frames:
            raise ImageReadError(
                name,
                f"frame {frame} out of range: the image has {n_frames} frame(s), valid indices 0..{n_frames - 1}",
            )
        return frame % n_frames
    if frame == "first" or n_frames == 1:
        return 0
    if frame == "middle":
        return n_frames // 2
    return None


def take_frame(stack: np.ndarray, frame: FramePolicy, axis: int, name: str) -> np.ndarray:
    """Apply the frame policy to an in-memory stack of frames.

    Args:
        stack: Array whose ``axis`` runs over frames, e.g. ``(H, W, D)`` with ``axis=-1``.
        frame: The frame policy (see :func:`frame_index`).
        axis: The frame axis.
        name: The file name, used in errors.

    Returns:
        The stack without ``axis``: one frame, or the float64 mean / max over all frames.

    Raises:
        ConfigError: For an invalid ``frame``.
        ImageReadError: When an int index is out of range.
    """
    index = frame_index(frame, stack.shape[axis], name)
    if index is not None:
        return np.take(stack, index, axis=axis)
    if frame == "mean":
        return stack.mean(axis=axis, dtype=np.float64)
    return stack.max(axis=axis).astype(np.float64)


class FrameAccumulator:
    """Running ``"mean"`` or ``"max"`` over frames fed one at a time (bounded memory).

    Attributes:
        policy: ``"mean"`` or ``"max"``.
    """

    def __init__(self, policy: str) -> None:
        if policy not in ("mean", "max"):
            raise ConfigError(f"FrameAccumulator needs 'mean' or 'max', got {policy!r}")
        self.policy = policy
        self._acc: np.ndarray | None = None
        self._count = 0

    def add(self, frame: np.ndarray, name: str) -> None:
        """Add one frame; every frame must have the shape of the first.

        Raises:
            ImageReadError: When a frame's shape differs from the first frame's.
        """
        f = np.asarray(frame, dtype=np.float64)
        if self._acc is None:
            self._acc = f.copy()
        elif f.shape != self._acc.shape:
            raise ImageReadError(name, f"frame {self._count} has shape {f.shape}, frame 0 has {self._acc.shape}")
        elif self.policy == "mean":
            self._acc += f
        else:
            np.fmax(self._acc, f, out=self._acc)
        self._count += 1

    def result(self) -> np.ndarray:
        """The reduced frame (float64)."""
        if self._acc is None:
            raise ConfigError("FrameAccumulator.result() called before any frame was added")
        return self._acc / self._count if self.policy == "mean" else self._acc
